#!/usr/bin/env bash
# Sourced by test.sh: the browser the console's tests drive (tests/browser), Debian's chromium,
# installed with apt-get when it is missing (as root, as on CI); Playwright for Python drives it
# (installed with the dev extras; it downloads no browser of its own).
set -euo pipefail
if [ -z "${STREAM_APP_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing chromium (apt-get) for the console's browser tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      chromium fonts-dejavu-core >/dev/null
  else
    echo "warning: chromium is not installed and this is not root: install Debian's chromium" \
         "(or set STREAM_APP_CHROMIUM to a Chromium binary); the browser tests will fail" >&2
  fi
fi
