#!/usr/bin/env bash
# One command: install what the tests need, then run them (ruff + pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
ruff check chimera tests
exec python -m pytest -q -p no:cacheprovider "$@"
