#!/usr/bin/env bash
# Run ctshm's atomics (and ring) tests on 64-bit Arm under qemu-user emulation.
#
#   tools/aarch64/run-tests.sh [--quick|--full] [--build] [--ref REF] [--] [PYTEST_TARGET...]
#
# Needs the userland from tools/aarch64/build-userland.sh (--build builds it first when it is
# missing).  Copies the work tree's ctshm/, tests/, pyproject.toml and tools/aarch64/smoke.py
# into the userland (/opt/ctshm-src), mounts /proc, /dev and the host's /dev/shm there, and
# runs under chroot + binfmt_misc + qemu-aarch64-static:
#
#   1. a sanity check: platform.machine() is aarch64, both backends load, the machine-code
#      backend runs fetch_add/compare_exchange, CTSHM_PLAIN_ACCESS is off;
#   2. tools/aarch64/smoke.py once per backend (CTSHM_ATOMICS=libatomic, =machine-code):
#      every op, 4-process contention, semaphores in every wait mode, ShmMemory; then the
#      atomics part again on an ARMv8.0 CPU model without LSE (QEMU_CPU=cortex-a53), where
#      libatomic takes its ldaxr/stlxr path instead of ldaddal/casal;
#   3. pytest on the targets once per backend (--full: also once per wait mode,
#      CTSHM_WAIT=clockwait|timedwait|polling, and libatomic on cortex-a53).
#
# Targets default to tests/test_atomics.py plus every tests/test_ring*.py that exists.
# --quick (default) keeps the whole run under 5 minutes (each step has a time limit, and
# pytest stops at the first failure); --full uses more contention iterations and no -x.
# --ref REF stages ctshm/, tests/ and pyproject.toml from a git commit (git archive) instead of
# the work tree (which other people may be editing).  CTSHM_ARM64_SHM=private gives the
# userland its own /dev/shm.  Everything is unmounted on exit (trap).
# Exit status: 0 all passed, 1 a step failed, 3 no userland.
# Settings: see common.sh (CTSHM_ARM64_ROOT...).

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="${CTSHM_REPO:-$(cd "$here/../.." && pwd)}"
# shellcheck source=common.sh
. "$here/common.sh"

mode=quick
build=0
ref=""
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) mode=quick ;;
        --full) mode=full ;;
        --build) build=1 ;;
        --ref) [ $# -ge 2 ] || die "--ref needs a git revision" 2; ref=$2; shift ;;
        --ref=*) ref=${1#--ref=} ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        --) shift; targets+=("$@"); break ;;
        -*) die "unknown option $1 (see --help)" 2 ;;
        *) targets+=("$1") ;;
    esac
    shift
done

need_root
if [ ! -f "$ARM64_MARKER" ]; then
    if [ $build = 1 ]; then
        "$here/build-userland.sh"
    else
        log "no arm64 userland in $ARM64_ROOT: run tools/aarch64/build-userland.sh first (or pass --build)"
        exit 3
    fi
fi

if [ $mode = quick ]; then
    smoke_args=(--procs 4 --iters 20000 --require-all)
    pytest_args=(-x -q)
    step_limit=150      # seconds per step
    budget=285          # seconds for the whole quick run: every step is cut to what is left
    wait_modes=(default)
else
    smoke_args=(--procs 4 --iters 100000 --require-all)
    pytest_args=(-q)
    step_limit=1800
    budget=14400
    wait_modes=(default clockwait timedwait polling)
fi
backends=(libatomic machine-code)

ensure_binfmt
take_lock

cleanup() {
    local rc=$?
    unmount_all_below_root || rc=1
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- stage the package ---------------------------------------------------------------------
dest="$ARM64_ROOT/opt/ctshm-src"
rm -rf --one-file-system "$dest"
mkdir -p "$dest/tools/aarch64"
items=(ctshm pyproject.toml)
if [ -n "$ref" ]; then
    git -C "$repo" rev-parse --verify -q "$ref^{commit}" >/dev/null || die "no such commit: $ref" 2
    git -C "$repo" cat-file -e "$ref:tests" 2>/dev/null && items+=(tests)
    git -C "$repo" archive --format=tar "$ref" "${items[@]}" | tar -C "$dest" -xf -
    log "staged ${items[*]} from $ref ($(git -C "$repo" rev-parse --short "$ref"))"
else
    [ -d "$repo/tests" ] && items+=(tests)
    tar -C "$repo" --exclude=__pycache__ --exclude=.pytest_cache -cf - "${items[@]}" | tar -C "$dest" -xf -
fi
cp "$here/smoke.py" "$dest/tools/aarch64/smoke.py"
if [ ${#targets[@]} -eq 0 ]; then
    [ -f "$dest/tests/test_atomics.py" ] && targets+=(tests/test_atomics.py)
    [ -f "$dest/tests/test_fast.py" ] && targets+=(tests/test_fast.py)  # the explicit fence
    for f in "$dest"/tests/test_ring*.py; do
        [ -f "$f" ] && targets+=("tests/$(basename "$f")")
    done
fi
install_qemu_into_root
mount_runtime

start=$(date +%s)
deadline=$(( start + budget ))
passed=0
failed=0
summary=()

# step NAME LIMIT VAR=value... -- COMMAND...: run COMMAND in the userland (cwd /opt/ctshm-src)
step() {
    local name=$1 limit=$2 envs=() t0 rc
    shift 2
    while [ "$1" != -- ]; do envs+=("$1"); shift; done
    shift
    log "== $name"
    t0=$(date +%s)
    if [ $(( deadline - t0 )) -lt "$limit" ]; then
        limit=$(( deadline - t0 ))
    fi
    if [ "$limit" -le 0 ]; then
        failed=$((failed + 1)); summary+=("FAIL 0s  $name (time budget of ${budget}s used up)")
        log "   $name: not run, the ${budget}s budget is used up"
        return 0
    fi
    set +e
    timeout --kill-after=10 "$limit" chroot "$ARM64_ROOT" /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 TERM=dumb PYTHONDONTWRITEBYTECODE=1 \
        PYTHONPATH=/opt/ctshm-src "${envs[@]}" \
        /bin/sh -c 'cd /opt/ctshm-src && exec "$@"' sh "$@"
    rc=$?
    set -e
    local dt=$(( $(date +%s) - t0 ))
    if [ $rc = 0 ]; then
        passed=$((passed + 1)); summary+=("PASS ${dt}s  $name")
    else
        [ $rc = 124 ] && log "step timed out after ${limit}s"
        failed=$((failed + 1)); summary+=("FAIL ${dt}s  $name (exit $rc)")
    fi
    log "   $name: exit $rc in ${dt}s"
}

log "host $(uname -m), $(qemu-aarch64-static --version | head -n1); userland $ARM64_ROOT; mode $mode"
log "pytest targets: ${targets[*]:-(none yet: smoke.py only)}"

step "sanity: aarch64 userland, both backends execute" 120 -- python3 - <<'EOF'
import platform, ctypes, sys
from ctshm import atomics
m = platform.machine()
print("platform.machine():", m, "| os.uname().machine:", __import__("os").uname().machine)
assert m == "aarch64", m
print("PLAIN_ORDERED_ACCESS:", atomics.PLAIN_ORDERED_ACCESS)
assert atomics.PLAIN_ORDERED_ACCESS is False
for name in atomics.BACKENDS:
    b = atomics.get_backend(name)
    w = ctypes.c_uint64(5)
    p = ctypes.addressof(w)
    r = (b.fetch_add(p, 2), b.compare_exchange(p, 7, 1 << 40), b.compare_exchange(p, 7, 0), b.load(p))
    print(f"{b!r}: fetch_add/cas/cas/load -> {r}")
    assert r == (5, 7, 1 << 40, 1 << 40), r
mc = atomics.get_backend("machine-code")
page = mc._page
words = [int.from_bytes(ctypes.string_at(page.addr + page.offsets["fetch_add"] + 4 * i, 4), "little")
         for i in range(6)]
print("machine-code page at %#x, fetch_add words: %s" % (page.addr, " ".join("%08x" % w for w in words)))
print("auto backend:", atomics.get_backend("auto"))
getauxval = ctypes.CDLL(None).getauxval
getauxval.restype, getauxval.argtypes = ctypes.c_ulong, (ctypes.c_ulong,)
hwcap = getauxval(16)
print("AT_HWCAP %#x: %s" % (hwcap, "LSE atomics (libatomic uses ldaddal/casal)" if hwcap & 256
                             else "no LSE (libatomic uses ldaxr/stlxr)"))
EOF
# (the heredoc feeds python3's stdin through chroot)

for backend in "${backends[@]}"; do
    step "smoke.py CTSHM_ATOMICS=$backend" "$step_limit" CTSHM_ATOMICS="$backend" -- \
        python3 tools/aarch64/smoke.py "${smoke_args[@]}"
done

# qemu's default CPU ("max") has the LSE atomics, so libatomic's ifuncs pick ldaddal/casal;
# an ARMv8.0 CPU model (no LSE) sends libatomic down its ldaxr/stlxr path instead (the
# machine-code backend is ARMv8.0 code either way).
step "smoke.py QEMU_CPU=cortex-a53 (ARMv8.0, no LSE), both backends" "$step_limit" \
    QEMU_CPU=cortex-a53 -- python3 tools/aarch64/smoke.py "${smoke_args[@]}" --skip-shared

if [ ${#targets[@]} -gt 0 ]; then
    if [ $mode = full ]; then
        step "pytest CTSHM_ATOMICS=libatomic QEMU_CPU=cortex-a53" "$step_limit" \
            CTSHM_ATOMICS=libatomic QEMU_CPU=cortex-a53 -- \
            python3 -m pytest -p no:cacheprovider "${pytest_args[@]}" "${targets[@]}"
    fi
    for backend in "${backends[@]}"; do
        for wm in "${wait_modes[@]}"; do
            envs=(CTSHM_ATOMICS="$backend")
            label="pytest CTSHM_ATOMICS=$backend"
            if [ "$wm" != default ]; then
                envs+=(CTSHM_WAIT="$wm")
                label="$label CTSHM_WAIT=$wm"
            fi
            step "$label" "$step_limit" "${envs[@]}" -- \
                python3 -m pytest -p no:cacheprovider "${pytest_args[@]}" "${targets[@]}"
        done
    done
fi

total=$(( $(date +%s) - start ))
log "summary ($mode, ${total}s):"
for line in "${summary[@]}"; do log "  $line"; done
echo "aarch64 emulated ($mode): $passed passed, $failed failed"
[ $failed = 0 ]
