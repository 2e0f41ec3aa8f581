#!/usr/bin/env bash
# Run ctshm's ring, records and thread-stress suites on free-threaded CPython with the GIL
# off (PYTHON_GIL=0), after checking sys._is_gil_enabled() is False.
#
#   tools/freethreaded/run-tests.sh [PYTHON] [-- PYTEST-ARGS...]
#
# PYTHON: a free-threaded interpreter (default: CTSHM_FT_PYTHON, else what build-python.sh
# built, /opt/ctshm-python3.13t/bin/python3.13t).  A venv with pytest + pytest-xdist from
# PyPI is made in /var/tmp/ctshm-ft-venv (CTSHM_FT_VENV).  Exit code: pytest's; 2 if the
# interpreter is missing or has the GIL on.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
py="${CTSHM_FT_PYTHON:-/opt/ctshm-python3.13t/bin/python3.13t}"
if [ $# -gt 0 ] && [ "$1" != "--" ]; then py=$1; shift; fi
[ "${1:-}" = "--" ] && shift
venv="${CTSHM_FT_VENV:-/var/tmp/ctshm-ft-venv}"
log() { printf '[freethreaded %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
[ -x "$py" ] || { log "no interpreter at $py: run tools/freethreaded/build-python.sh first"; exit 2; }
if [ ! -x "$venv/bin/python" ]; then
    log "venv $venv (pytest, pytest-xdist from PyPI)"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet pytest pytest-xdist
fi
export PYTHON_GIL=0
"$venv/bin/python" - <<'PY' || exit 2
import sys, sysconfig
assert sysconfig.get_config_var("Py_GIL_DISABLED"), "not a free-threaded build"
assert not sys._is_gil_enabled(), "the GIL is enabled (PYTHON_GIL=0 ignored?)"
print("free-threaded:", sys.version.split()[0], "GIL enabled:", sys._is_gil_enabled())
PY
cd "$root"
# Importing ctshm must not turn the GIL back on (an extension module without
# Py_mod_gil would): checked in the same process that imports it.
PYTHONPATH="$root" "$venv/bin/python" -c 'import sys, ctshm, ctshm.ring, ctshm.records; assert not sys._is_gil_enabled(), "import ctshm enabled the GIL"; print("after import ctshm: GIL enabled:", sys._is_gil_enabled())'
PYTHONPATH="$root" exec "$venv/bin/python" -m pytest -p xdist -n 2 -q \
    tests/test_ring.py tests/test_records.py tests/test_threads_stress.py "$@"
