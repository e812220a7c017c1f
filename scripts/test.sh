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
# End-to-end tests except the HA and BGP namespace ones, in parallel...
cargo test --test tests "$@" -- --skip ha:: --skip bgp::
# ...then the HA and BGP (ECMP) namespace tests alone: they measure failover and
# route withdrawal in milliseconds, and a loaded machine (the rest of the suite)
# delays packets and processes.
cargo test --test tests "$@" -- ha:: bgp:: --test-threads=1
