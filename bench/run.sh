#!/bin/sh
# Load benchmark: tandem vs HAProxy vs nginx. All logic is in run.py (python3,
# stdlib only); see bench/README.md. Example: bench/run.sh --quick
here=$(dirname "$0")
BENCH_ARGV0="$0" exec python3 "$here/run.py" "$@"
