// compose-check loads a Compose file with the Compose Specification's reference loader
// (github.com/compose-spec/compose-go, the library `docker compose` itself uses) and prints the
// resolved project as JSON, or the loader's error and exit status 1.
//
// CI builds it with `go install` (scripts/bootstrap.sh) so that docker-compose.yml is checked by
// the real parser, schema and cross-references included, on machines without Docker; the tests
// read the printed project to assert what the file promises (tests/unit/test_compose.py).
//
// Usage: compose-check FILE
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: compose-check FILE")
		os.Exit(2)
	}
	if err := check(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "compose-check:", err)
		os.Exit(1)
	}
}

// check loads the file as `docker compose config` would, with interpolation from the
// environment, and writes the resolved project to stdout.
func check(path string) error {
	options, err := cli.NewProjectOptions(
		[]string{path},
		cli.WithOsEnv,
		cli.WithInterpolation(true),
		cli.WithName("compose-check"),
	)
	if err != nil {
		return err
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		return err
	}
	resolved, err := project.MarshalJSON()
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(resolved)
	return err
}
