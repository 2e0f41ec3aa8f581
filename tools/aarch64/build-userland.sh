#!/usr/bin/env bash
# Build an arm64 Debian userland for running ctshm's tests under qemu-user emulation.
#
#   tools/aarch64/build-userland.sh [--force]
#
# Two-stage debootstrap (--foreign, --variant=minbase): the first stage downloads and unpacks
# on the host; the second stage runs the arm64 maintainer scripts inside the folder through
# binfmt_misc + qemu-aarch64-static.  Installs python3, python3-pytest and libatomic1 (and
# CTSHM_ARM64_EXTRA_PACKAGES).  Host tools come from apt: debootstrap, qemu-user-static,
# binfmt-support.
#
# Idempotent: a finished build leaves a marker file recording what it was built from; a later
# call with the same settings does nothing.  A folder without the marker (an interrupted
# build) or with other settings is removed and rebuilt; --force rebuilds unconditionally.
#
# Settings: CTSHM_ARM64_ROOT (default /var/tmp/ctshm-arm64-root), CTSHM_ARM64_SUITE (bookworm),
# CTSHM_ARM64_MIRROR (default: the host's apt mirror), CTSHM_ARM64_EXTRA_PACKAGES.
# Needs root.  Takes a few minutes and ~0.3 GB (see tools/aarch64/README.md).

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
. "$here/common.sh"

force=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) die "unknown argument: $arg (use --force or --help)" 2 ;;
    esac
done

need_root
case "$ARM64_ROOT" in
    /|/bin|/boot|/dev|/etc|/home|/lib|/proc|/root|/run|/sys|/tmp|/usr|/var|/var/tmp)
        die "refusing CTSHM_ARM64_ROOT=$ARM64_ROOT: give a folder of its own" 2 ;;
esac

# What the marker records: a change in any of these means a rebuild.
want="suite=$ARM64_SUITE
mirror=$ARM64_MIRROR
packages=$ARM64_PACKAGES
variant=minbase"

take_lock

if [ $force = 0 ] && [ -f "$ARM64_MARKER" ]; then
    if [ "$(grep -v '^built=\|^seconds=' "$ARM64_MARKER")" = "$want" ]; then
        log "userland already built in $ARM64_ROOT ($(grep '^built=' "$ARM64_MARKER" | cut -d= -f2)); nothing to do"
        exit 0
    fi
    log "userland in $ARM64_ROOT was built with other settings: rebuilding"
fi

start=$(date +%s)

# --- host tools --------------------------------------------------------------------------
# binfmt_misc first: qemu-user-static's postinst registers its formats only if it is mounted.
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
fi
apt_install_host debootstrap qemu-user-static binfmt-support debian-archive-keyring
ensure_binfmt
log "host: $(qemu-aarch64-static --version | head -n1)"

# --- start from an empty folder -----------------------------------------------------------
cleanup() {
    local rc=$?
    unmount_all_below_root || true
    if [ $rc != 0 ]; then
        log "build FAILED (exit $rc); the folder stays for inspection (no marker): rerun to retry"
        [ -f "$ARM64_ROOT/debootstrap/debootstrap.log" ] &&
            log "see $ARM64_ROOT/debootstrap/debootstrap.log"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

unmount_all_below_root || die "cannot unmount everything below $ARM64_ROOT: not removing it"
if [ -e "$ARM64_ROOT" ]; then
    log "removing the previous (partial or outdated) userland in $ARM64_ROOT"
    # one-file-system: never follows a mount we failed to see into the host's /dev or /proc.
    rm -rf --one-file-system "$ARM64_ROOT"
fi
mkdir -p "$ARM64_ROOT"

# --- first stage (host) -------------------------------------------------------------------
log "debootstrap stage 1: $ARM64_SUITE arm64 minbase from $ARM64_MIRROR (+ $ARM64_PACKAGES)"
t1=$(date +%s)
debootstrap --arch=arm64 --foreign --variant=minbase \
    --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
    --include="$ARM64_PACKAGES" \
    "$ARM64_SUITE" "$ARM64_ROOT" "$ARM64_MIRROR" >&2
log "stage 1 took $(( $(date +%s) - t1 )) s"

# --- second stage (emulated) --------------------------------------------------------------
install_qemu_into_root
log "debootstrap stage 2 (arm64 maintainer scripts under qemu-user)"
t2=$(date +%s)
chroot "$ARM64_ROOT" /debootstrap/debootstrap --second-stage >&2
log "stage 2 took $(( $(date +%s) - t2 )) s"
unmount_all_below_root

# --- trim and check -----------------------------------------------------------------------
in_root apt-get clean
rm -rf "$ARM64_ROOT"/var/lib/apt/lists/* 2>/dev/null || true
# apt inside the userland (to add packages by hand) uses the same mirror.
printf 'deb %s %s main\n' "$ARM64_MIRROR" "$ARM64_SUITE" > "$ARM64_ROOT/etc/apt/sources.list"

arch=$(in_root python3 -c 'import platform; print(platform.machine())')
[ "$arch" = aarch64 ] || die "python3 in the userland reports machine $arch, not aarch64"
in_root python3 -c 'import ctypes; ctypes.CDLL("libatomic.so.1"); import pytest' ||
    die "the userland lacks libatomic.so.1 or pytest"
log "userland: $(in_root python3 --version 2>&1), pytest $(in_root python3 -c 'import pytest; print(pytest.__version__)'), machine $arch"

seconds=$(( $(date +%s) - start ))
printf '%s\nbuilt=%s\nseconds=%s\n' "$want" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$seconds" > "$ARM64_MARKER"
log "built $ARM64_ROOT in $seconds s; disk use $(du -sh --one-file-system "$ARM64_ROOT" | cut -f1)"
