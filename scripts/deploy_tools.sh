#!/usr/bin/env bash
# Sourced by test.sh after bootstrap.sh (not by demo.sh: the demo needs none of this).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Tools the deployment tests run (tests/unit/test_helm_chart.py, tests/unit/test_compose.py),
# built from their Go modules into .tools/bin, pinned, and only when that exact version is not
# there yet: helm, and compose-check (tools/compose-check: the Compose Specification's loader).
HELM_VERSION=v3.22.0
tools_bin="$PWD/.tools/bin"
go_tool=$(command -v go || { [ -x /usr/local/go/bin/go ] && echo /usr/local/go/bin/go; } || true)
if [ -z "$go_tool" ]; then
  echo "warning: go not found (on PATH or /usr/local/go/bin): helm and compose-check are not" \
       "built, and the deployment tests will fail" >&2
else
  mkdir -p "$tools_bin"
  # The module version go recorded in the binary (`helm version` says only v3.22 when built so).
  if ! "$go_tool" version -m "$tools_bin/helm" 2>/dev/null |
       grep -Eq "^[[:space:]]+mod[[:space:]]+helm.sh/helm/v3[[:space:]]+$HELM_VERSION[[:space:]]"; then
    echo "==> building helm $HELM_VERSION into .tools/bin (go install; a few minutes the first time)"
    GOBIN="$tools_bin" GOFLAGS=-buildvcs=false "$go_tool" install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  fi
  if [ ! -x "$tools_bin/compose-check" ] ||
     [ -n "$(find tools/compose-check -newer "$tools_bin/compose-check" -type f)" ]; then
    echo "==> building compose-check into .tools/bin (tools/compose-check)"
    (cd tools/compose-check && GOBIN="$tools_bin" GOFLAGS=-buildvcs=false "$go_tool" install .)
  fi
fi
