#!/usr/bin/env bash
# The README's test command (and CI's): install, lint, type-check, check the import contracts,
# then the whole pytest suite.
# The suite's session fixture provides a real Kafka broker (KAFKA_BOOTSTRAP_SERVERS, else a
# testcontainers Kafka where Docker answers, else a KRaft broker from Maven-resolved Apache Kafka
# jars) and stops whatever it started.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
source "$(dirname "${BASH_SOURCE[0]}")/deploy_tools.sh"
source "$(dirname "${BASH_SOURCE[0]}")/browser.sh"
echo "==> ruff"
.venv/bin/ruff check stream_app tests bench
.venv/bin/ruff format --check stream_app tests bench
echo "==> mypy (strict)"
.venv/bin/mypy
echo "==> import contracts (import-linter, [tool.importlinter] in pyproject.toml)"
.venv/bin/lint-imports
echo "==> pytest"
exec .venv/bin/python -m pytest "$@"
