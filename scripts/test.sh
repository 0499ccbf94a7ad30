#!/usr/bin/env bash
# One command: install what the tests need, then run them (ruff + pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
ruff check chimera tests
# Three test processes on two cores: most tests wait on sockets (Redis, the venue, subprocess workers),
# so a third process fills the idle time. Files stay whole on one process (their module fixtures,
# e.g. one venue, are set up once); each process starts its own redis-server and 6-node cluster.
# --durations: every run lists its slowest tests, so the 15-minute budget is watched where it is spent.
exec python -m pytest -q -p no:cacheprovider -n "${CHIMERA_TEST_PROCS:-3}" --dist loadfile --durations=25 "$@"
