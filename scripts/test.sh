#!/usr/bin/env bash
# Runs every test: unit tests, the config golden tests, and the end-to-end tests
# that start the real tandem binary in front of real Express backends (and, as
# root, the HA tests in network namespaces). Installs the Express backend's npm
# packages first if they are missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

command -v node >/dev/null || { echo "test.sh: node is required (apt-get install nodejs npm)" >&2; exit 1; }
if [ ! -d examples/express-backend/node_modules/express ]; then
  (cd examples/express-backend && npm ci --no-audit --no-fund --loglevel=error)
fi
# Unit tests (library, binary) and the micro-benchmarks in test mode.
cargo test --lib --bins --benches "$@"
# End-to-end tests except the HA namespace ones, in parallel...
cargo test --test tests "$@" -- --skip ha::
# ...then the HA namespace tests alone: they measure failover in milliseconds,
# and a loaded machine (the rest of the suite) delays packets and processes.
cargo test --test tests "$@" -- ha:: --test-threads=1
