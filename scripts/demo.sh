#!/usr/bin/env bash
# The README's demo command: install, start Kafka, apply topics, run a counter worker, send
# messages, print the cells, stop everything it started.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
exec .venv/bin/stream-app demo "$@"
