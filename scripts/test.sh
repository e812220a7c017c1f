#!/usr/bin/env bash
# Runs every test: unit tests, the config golden tests, and the end-to-end tests
# that start the real tandem binary in front of real Express backends (and, as
# root, the HA tests in network namespaces). Installs the Express backend's npm
# packages first if they are missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# What the suite needs beyond Rust, checked up front so a missing tool is named
# here rather than in the middle of the run (README.md lists the same).
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$1 (apt-get install $2)"); }
need node nodejs
need npm npm
need promtool prometheus
need script bsdutils
if [ "${TANDEM_SKIP_NETNS:-}" != "1" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "test.sh: the HA tests need root (network namespaces); run as root, or set" \
      "TANDEM_SKIP_NETNS=1 to skip them" >&2
    exit 1
  fi
  need ip iproute2
  need nft nftables
  need curl curl
  need keepalived keepalived
  need bird bird2
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "test.sh: missing:" >&2
  printf '  %s\n' "${missing[@]}" >&2
  exit 1
fi
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
