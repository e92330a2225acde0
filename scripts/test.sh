#!/usr/bin/env bash
# The whole suite: lint and types first, then every test against real servers.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/lint.sh
exec .venv/bin/pytest "$@"
