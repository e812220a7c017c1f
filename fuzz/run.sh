#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), one after the other, at the
# lowest CPU priority, and prints a summary line per target: executions and whether
# libFuzzer found a crash (its input is kept under fuzz/artifacts/TARGET/).
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). It uses nightly-only compiler flags;
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them. Corpora grow under
# fuzz/corpus/TARGET/ (not committed) and are seeded from the repository's fixtures.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
SECONDS_EACH="${1:-60}"
shift || true
TARGETS=("$@")
if [ "${#TARGETS[@]}" -eq 0 ]; then
  TARGETS=(config request chunked response_head heartbeat)
fi
command -v cargo-fuzz >/dev/null || { echo "run.sh: cargo install cargo-fuzz" >&2; exit 1; }
export RUSTC_BOOTSTRAP=1

# Seed corpora: the golden config files for the loader; a few well-formed inputs
# for the HTTP parsers (the first byte of each is the target's split/flags byte).
seed() {
  local dir="corpus/$1"
  mkdir -p "$dir"
  shift
  local i=0
  for s in "$@"; do
    printf '%b' "$s" >"$dir/seed-$i"
    i=$((i + 1))
  done
}
mkdir -p corpus/config
cp ../tests/golden/config/*.yaml corpus/config/ 2>/dev/null || true
cp ../proxy.yaml corpus/config/proxy.yaml
seed request \
  '\x03GET / HTTP/1.1\r\nHost: a\r\n\r\n' \
  '\x05POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n' \
  '\x07POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\nGET /n HTTP/1.0\r\nConnection: keep-alive\r\n\r\n' \
  '\x01PUT /e?q HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2, 2\r\nConnection: close\r\n\r\nok'
seed chunked '\x02' '\x045\r\nhello\r\n0\r\n\r\n' '\x011;ext=1\r\na\r\n0\r\nTrailer: x\r\n\r\n'
seed response_head \
  '\x00HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok' \
  '\x00HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n2\r\nok\r\n0\r\n\r\n' \
  '\x02HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n' \
  '\x01HTTP/1.0 304 Not Modified\r\n\r\n'
seed heartbeat 'TNDM\x02\x01\x00\x64\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x07\x03lb1'

# -a: debug assertions, so an arithmetic overflow is a finding too.
nice -n 19 cargo fuzz build -a >/dev/null
status=0
for t in "${TARGETS[@]}"; do
  log="$(mktemp "${TMPDIR:-/tmp}/fuzz-$t.XXXXXX")"
  set +e
  nice -n 19 cargo fuzz run -a "$t" -- -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 \
    -max_len=8192 -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo "?")
  cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -n 1 || true)
  if [ "$rc" -eq 0 ]; then
    echo "$t: $execs executions in ${SECONDS_EACH}s, $cov, no crash"
  else
    status=1
    echo "$t: CRASH after $execs executions (exit $rc); log: $log"
    grep -E 'panicked|ERROR|Test unit written|SUMMARY' "$log" | head -n 8 || true
  fi
done
exit "$status"
