#!/bin/sh
# Soak test: mixed traffic against a release build of tandem for N minutes, with
# reloads and backend kills, checking RSS and descriptors. All logic is in
# bench/harness/soak.py; see bench/README.md ("Soak test"). Not run in CI.
# Examples: bench/soak.sh            (10 minutes)
#           bench/soak.sh --smoke    (1 minute smoke check)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
py=python3
# The HTTP/2 clients use the pure-Python `h2` package (sans-io, from PyPI); the
# rest is the standard library. Without it, install it once into a private venv
# outside the repository rather than into the system's Python.
if ! python3 -c 'import h2' 2>/dev/null; then
    venv="${TANDEM_SOAK_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/tandem-soak-venv}"
    if ! "$venv/bin/python" -c 'import h2' 2>/dev/null; then
        echo "soak: the HTTP/2 clients need the Python package h2; installing it with pip" >&2
        echo "soak: into $venv (set TANDEM_SOAK_VENV to use another directory)" >&2
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'h2>=4,<5'
    fi
    py="$venv/bin/python"
fi
# The Python process stops everything it started (by PID) on exit, Ctrl-C or
# SIGTERM; exec so that a signal sent to this script reaches it directly.
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" PYTHONDONTWRITEBYTECODE=1 SOAK_ARGV0="$0" \
    exec "$py" -m harness.soak "$@"
