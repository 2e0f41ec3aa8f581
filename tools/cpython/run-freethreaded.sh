#!/usr/bin/env bash
# Run ctshm's suites on free-threaded CPython with the GIL off (PYTHON_GIL=0), after checking
# that the interpreter is a free-threaded build, that the GIL is off, and that it stays off
# after `import ctshm` (checked in the process that imports it).
#
#   tools/cpython/run-freethreaded.sh [PYTHON] [-- PYTEST-ARGS...]
#
# PYTHON: a free-threaded interpreter (default: CTSHM_FT_PYTHON, else the newest that
# tools/cpython/build-python.sh built: /opt/ctshm-python3.1Xt/bin/python3.1Xt).  A venv with
# pytest + pytest-xdist from PyPI is made in CTSHM_FT_VENV (default
# /var/tmp/ctshm-ft-venv-<version>); ctshm is imported from this checkout (PYTHONPATH).
# Two pytest runs: PYTEST-ARGS (default: -n 2 and the core suites + the thread stress
# tests), then the GIL-sensitive suites again on fast-mode rings (CTSHM_TEST_FAST=1).
# Exit code: 0, pytest's first failing one, or 2 if the interpreter is missing or has the
# GIL on.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
log() { printf '[freethreaded %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
py="${CTSHM_FT_PYTHON:-}"
if [ -z "$py" ]; then
    py=$(ls -d /opt/ctshm-python3.*t/bin/python3.*t 2>/dev/null | sort -V | tail -n1 || true)
fi
if [ $# -gt 0 ] && [ "$1" != "--" ]; then py=$1; shift; fi
[ "${1:-}" = "--" ] && shift
[ -n "$py" ] && [ -x "$py" ] ||
    { log "no interpreter (${py:-none found}): run tools/cpython/build-python.sh 3.14 --disable-gil"; exit 2; }
ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
venv="${CTSHM_FT_VENV:-/var/tmp/ctshm-ft-venv-$ver}"
if [ ! -x "$venv/bin/python" ]; then
    log "venv $venv (pytest, pytest-xdist from PyPI)"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet pytest pytest-xdist
fi
export PYTHON_GIL=0 PYTHONPATH="$root"
cd "$root"
"$venv/bin/python" - <<'PY' || exit 2
import sys, sysconfig
assert sysconfig.get_config_var("Py_GIL_DISABLED"), "not a free-threaded build"
assert not sys._is_gil_enabled(), "the GIL is enabled (PYTHON_GIL=0 ignored?)"
print("free-threaded:", sys.version.split()[0], "GIL enabled:", sys._is_gil_enabled())
# An extension module without Py_mod_gil would turn the GIL back on when imported.
import ctshm, ctshm.ring, ctshm.records, ctshm.aio, ctshm.channel
assert not sys._is_gil_enabled(), "import ctshm enabled the GIL"
print("after import ctshm:", ctshm.__file__, "GIL enabled:", sys._is_gil_enabled())
PY
core=(tests/test_libc.py tests/test_atomics.py tests/test_semaphore.py tests/test_memory.py
      tests/test_ring.py tests/test_records.py tests/test_interop.py tests/test_hardening.py
      tests/test_fast.py)
sensitive=(tests/test_ring.py tests/test_threads_stress.py tests/test_freethreaded_stress.py)
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(-n 2 "${core[@]}" tests/test_threads_stress.py
                               tests/test_freethreaded_stress.py)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
rc=0
summary=()
run_pytest() {  # run_pytest PYTEST-ARGS...: output shown and kept; rc = the first failure's
    local r=0
    "$venv/bin/python" -m pytest -p xdist -q "$@" 2>&1 | tee "$out" || r=${PIPESTATUS[0]}
    [ $rc -ne 0 ] || rc=$r
    summary+=("$(grep -E '(passed|failed|error)' "$out" | tail -n1 | tr -d '=' | sed 's/^ *//')")
}
run_pytest "${args[@]}"
log "fast mode: ${sensitive[*]} on rings created with fast=True"
CTSHM_TEST_FAST=1 run_pytest -n 2 "${sensitive[@]}"
echo "GIL off: ${summary[0]:-no result}; fast mode, GIL off: ${summary[1]:-no result}"
exit $rc
