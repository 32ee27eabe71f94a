#!/usr/bin/env bash
# Refresh the console's vendored JavaScript (stream_app/console/static/vendor/) from the npm
# registry, at the versions pinned in assets.json, and check each file's sha256 against the pin.
# Run by a developer when a pin changes (edit assets.json, run this, commit the files); nothing
# downloads at run time or install time: the files ship inside the package.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
vendor=stream_app/console/static/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$vendor/assets.json" <<'PY' | while read -r name package version file sha; do
import json, sys
for name, pin in json.load(open(sys.argv[1])).items():
    print(name, pin["package"], pin["version"], pin["file"], pin["sha256"])
PY
  (cd "$work" && npm pack --silent "$package@$version" >/dev/null)
  mkdir -p "$work/$package" && tar xzf "$work/${package}-${version}.tgz" -C "$work/$package"
  cp "$work/$package/package/$file" "$vendor/$name"
  cp "$work/$package/package/LICENSE" "$vendor/${name%%.*}.LICENSE"
  echo "$sha  $vendor/$name" | sha256sum --check --quiet
  echo "vendored $package@$version -> $vendor/$name"
done
