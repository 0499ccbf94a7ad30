#!/usr/bin/env bash
# One command: install what the demo needs, then run the local stack (paper trading on real data).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
exec chimera up "$@"
