#!/usr/bin/env bash
# Runs the README's example: two Express backends (127.0.0.1:3001 and :3002) behind
# tandem with ./proxy.yaml. Ctrl-C stops everything this script started.
#
# Environment:
#   TANDEM_BIN   use this binary instead of building target/release/tandem
#   TANDEM_CONFIG  config file (default: proxy.yaml in the repository root)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

APP_DIR="examples/express-backend"
CONFIG="${TANDEM_CONFIG:-proxy.yaml}"
LISTEN_URL="http://127.0.0.1:8080"
ADMIN_URL="http://127.0.0.1:9901"
BACKENDS=("app-1:3001" "app-2:3002")

die() {
  echo "example.sh: $*" >&2
  exit 1
}

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is required but not installed"
}

need node
need npm
need curl
[[ -f "$CONFIG" ]] || die "config file $CONFIG not found"

if [[ ! -d "$APP_DIR/node_modules" ]]; then
  echo "==> npm ci in $APP_DIR"
  (cd "$APP_DIR" && npm ci --no-audit --no-fund)
fi

if [[ -n "${TANDEM_BIN:-}" ]]; then
  TANDEM="$TANDEM_BIN"
else
  need cargo
  echo "==> cargo build --release"
  cargo build --release
  TANDEM="target/release/tandem"
fi
[[ -x "$TANDEM" ]] || die "$TANDEM is not an executable"

# Something already answering on a port would pass the health checks below in place of
# the process this script starts, so refuse to start instead.
port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
for port in 3001 3002 8080; do
  if port_in_use "$port"; then
    die "127.0.0.1:$port is already in use; stop whatever listens there first"
  fi
done

LOG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/tandem-example.XXXXXX")"
PIDS=()

# Stops only what this script started, by PID: TERM first (tandem drains, Express
# closes), KILL whatever is still alive after a grace period.
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if ((${#PIDS[@]} > 0)); then
    echo "==> stopping (pids ${PIDS[*]})"
    kill -TERM "${PIDS[@]}" 2>/dev/null || true
    (
      sleep 10
      kill -KILL "${PIDS[@]}" 2>/dev/null || true
    ) &
    local watchdog=$!
    wait "${PIDS[@]}" 2>/dev/null || true
    kill "$watchdog" 2>/dev/null || true
    wait "$watchdog" 2>/dev/null || true
  fi
  echo "==> logs kept in $LOG_DIR"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Polls until the URL answers 2xx, with a bounded number of tries; gives up early
# when the process behind it has died (port taken, bad config, ...).
wait_for() {
  local url=$1 pid=$2 log=$3 tries=${4:-100} i
  for ((i = 0; i < tries; i++)); do
    if curl -fsS -m 1 -o /dev/null "$url" 2>/dev/null && kill -0 "$pid" 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "example.sh: process $pid exited" >&2
      if [[ -f "$log" ]]; then
        echo "last lines of $log:" >&2
        tail -n 20 "$log" >&2 || true
      fi
      return 1
    fi
    sleep 0.1
  done
  echo "example.sh: $url did not answer after $tries tries" >&2
  return 2
}

for backend in "${BACKENDS[@]}"; do
  name="${backend%%:*}"
  port="${backend##*:}"
  HOST=127.0.0.1 PORT="$port" NAME="$name" node "$APP_DIR/server.js" >"$LOG_DIR/$name.log" 2>&1 &
  PIDS+=("$!")
  echo "==> started $name on 127.0.0.1:$port (pid $!)"
done

i=0
for backend in "${BACKENDS[@]}"; do
  name="${backend%%:*}"
  port="${backend##*:}"
  wait_for "http://127.0.0.1:$port/healthz" "${PIDS[$i]}" "$LOG_DIR/$name.log" || exit 1
  i=$((i + 1))
done
echo "==> backends healthy"

# tandem runs in the background and the script waits on it, so the traps stay in
# charge of stopping everything (an exec would orphan the backends).
echo "==> $TANDEM run -c $CONFIG"
"$TANDEM" run -c "$CONFIG" &
TANDEM_PID=$!
PIDS+=("$TANDEM_PID")
echo "==> tandem pid $TANDEM_PID"

set +e
wait_for "$LISTEN_URL/" "$TANDEM_PID" "" 100
ready=$?
set -e
if ((ready == 1)); then
  # tandem died; its own output above says why. Exit with its status.
  set +e
  wait "$TANDEM_PID"
  status=$?
  set -e
  exit "$status"
elif ((ready == 0)); then
  cat <<EOF

tandem is serving (pid $TANDEM_PID). Try:
  curl $LISTEN_URL/
  curl $LISTEN_URL/echo
  curl $ADMIN_URL/status
  curl $ADMIN_URL/metrics
  $TANDEM reload -c $CONFIG       # or: kill -HUP $TANDEM_PID
Backend switches (see $APP_DIR/README.md), e.g.:
  curl -X POST -d '{"health":"fail"}' http://127.0.0.1:3001/__control
Press Ctrl-C to stop.

EOF
else
  echo "example.sh: tandem is running but $LISTEN_URL/ does not answer yet;" \
    "is proxy.yaml listening there? Press Ctrl-C to stop." >&2
fi

set +e
wait "$TANDEM_PID"
status=$?
set -e
echo "==> tandem exited with status $status"
exit "$status"
