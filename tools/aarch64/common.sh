# shellcheck shell=bash disable=SC2034
# Shared by build-userland.sh and run-tests.sh (sourced, not executed).
#
# Settings (environment):
#   CTSHM_ARM64_ROOT    the userland folder            (default /var/tmp/ctshm-arm64-root)
#   CTSHM_ARM64_SUITE   Debian suite                   (default bookworm)
#   CTSHM_ARM64_MIRROR  Debian mirror                  (default: the host's apt mirror)
#   CTSHM_ARM64_EXTRA_PACKAGES  more packages for the userland, comma separated
#   CTSHM_ARM64_SHM     host (default: bind the host's /dev/shm) or private (a fresh tmpfs)

set -euo pipefail

ARM64_ROOT="${CTSHM_ARM64_ROOT:-/var/tmp/ctshm-arm64-root}"
ARM64_ROOT="${ARM64_ROOT%/}"
ARM64_SUITE="${CTSHM_ARM64_SUITE:-bookworm}"
# The marker is written last by build-userland.sh: a folder without it is a partial build.
ARM64_MARKER="$ARM64_ROOT/.ctshm-userland-complete"
# Serialises builds and runs on one userland (a run's cleanup unmounts everything below
# ARM64_ROOT, so two runs must not overlap).  Outside the root so rm -rf never races it.
ARM64_LOCK="$ARM64_ROOT.lock"
ARM64_PACKAGES="python3,python3-pytest,libatomic1${CTSHM_ARM64_EXTRA_PACKAGES:+,$CTSHM_ARM64_EXTRA_PACKAGES}"

log() { printf '[aarch64 %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit "${2:-1}"; }

need_root() {
    [ "$(id -u)" = 0 ] || die "must run as root (chroot, mount and binfmt_misc need it)"
}

# The host's Debian mirror, read from apt's own configuration (deb822 .sources files first,
# then one-line sources.list entries); deb.debian.org if none is found.
host_mirror() {
    local m=""
    if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
        m=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }' \
            /etc/apt/sources.list.d/*.sources)
    fi
    if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
        m=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }' \
            /etc/apt/sources.list)
    fi
    printf '%s\n' "${m:-http://deb.debian.org/debian}"
}
ARM64_MIRROR="${CTSHM_ARM64_MIRROR:-$(host_mirror)}"

apt_updated=0
apt_install_host() {
    # apt_install_host PKG... : install the host packages that are missing.
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing host packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if [ $apt_updated = 0 ]; then
        apt-get update -q >&2
        apt_updated=1
    fi
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

# Make sure the kernel runs aarch64 ELF files through qemu-aarch64-static (binfmt_misc).
ensure_binfmt() {
    local bm=/proc/sys/fs/binfmt_misc
    if [ ! -e "$bm/status" ]; then
        log "mounting binfmt_misc"
        mount -t binfmt_misc binfmt_misc "$bm" ||
            die "cannot mount binfmt_misc on $bm (a container without the privilege?)"
    fi
    if [ "$(cat "$bm/status")" != enabled ]; then
        echo 1 > "$bm/status"
    fi
    if [ ! -e "$bm/qemu-aarch64" ]; then
        log "registering qemu-aarch64 with binfmt_misc"
        update-binfmts --enable qemu-aarch64 >&2 2>/dev/null ||
            update-binfmts --import qemu-aarch64 >&2 2>/dev/null || true
    fi
    if [ ! -e "$bm/qemu-aarch64" ] && [ -f /usr/lib/binfmt.d/qemu-aarch64.conf ]; then
        # The systemd-binfmt line that qemu-user-static ships ("F": the interpreter is opened
        # now, so it also works inside a chroot that lacks it).
        grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf | head -n1 > "$bm/register" || true
    fi
    [ -e "$bm/qemu-aarch64" ] || die "qemu-aarch64 is not registered with binfmt_misc"
    grep -q '^enabled' "$bm/qemu-aarch64" || echo 1 > "$bm/qemu-aarch64"
}

# Put the emulator into the userland too, at both the classic path and the path the
# registration names, so it also works where binfmt was registered without the F flag.
install_qemu_into_root() {
    local q interp
    q=$(command -v qemu-aarch64-static) || die "qemu-aarch64-static not found"
    install -D -m 0755 "$q" "$ARM64_ROOT/usr/bin/qemu-aarch64-static"
    interp=$(awk '$1 == "interpreter" { print $2 }' /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null || true)
    if [ -n "$interp" ] && [ "$interp" != /usr/bin/qemu-aarch64-static ] &&
       [ ! -e "$ARM64_ROOT$interp" ]; then
        mkdir -p "$ARM64_ROOT$(dirname "$interp")"
        ln -sf /usr/bin/qemu-aarch64-static "$ARM64_ROOT$interp"
    fi
}

# Mount points below the root, deepest first (from the kernel's table, so mounts made by
# debootstrap itself are found too).
mounts_below_root() {
    awk -v r="$ARM64_ROOT" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/mounts | sort -r
}

unmount_all_below_root() {
    local m tries
    for _ in 1 2 3; do
        [ -z "$(mounts_below_root)" ] && return 0
        for m in $(mounts_below_root); do
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
        done
    done
    if [ -n "$(mounts_below_root)" ]; then
        log "warning: still mounted below $ARM64_ROOT: $(mounts_below_root | tr '\n' ' ')"
        return 1
    fi
}

# /proc, /dev and the host's /dev/shm inside the userland (POSIX shm and named semaphores
# live in /dev/shm; binding the host's lets host tools see and clean up what tests leave).
# CTSHM_ARM64_SHM=private mounts a fresh tmpfs there instead.
mount_runtime() {
    mkdir -p "$ARM64_ROOT/proc" "$ARM64_ROOT/dev" "$ARM64_ROOT/sys"
    mountpoint -q "$ARM64_ROOT/proc" || mount -t proc proc "$ARM64_ROOT/proc"
    mountpoint -q "$ARM64_ROOT/dev" || mount --bind /dev "$ARM64_ROOT/dev"
    mkdir -p "$ARM64_ROOT/dev/shm" 2>/dev/null || true
    if ! mountpoint -q "$ARM64_ROOT/dev/shm"; then
        if [ "${CTSHM_ARM64_SHM:-host}" = private ]; then
            # Isolated from whatever else runs on the host (other test runs, `ctshm gc`).
            mount -t tmpfs -o mode=1777,size=2g ctshm-arm64-shm "$ARM64_ROOT/dev/shm"
        else
            mount --bind /dev/shm "$ARM64_ROOT/dev/shm"
        fi
    fi
    if [ -d /dev/pts ] && mountpoint -q /dev/pts; then
        mountpoint -q "$ARM64_ROOT/dev/pts" || mount --bind /dev/pts "$ARM64_ROOT/dev/pts" || true
    fi
}

take_lock() {
    mkdir -p "$(dirname "$ARM64_LOCK")"
    exec 9>"$ARM64_LOCK"
    if ! flock -n 9; then
        log "waiting for another build/run on $ARM64_ROOT to finish"
        flock 9
    fi
}

# Run a command inside the userland with a clean environment (plus any VAR=value arguments
# given before the command, e.g. in_root CTSHM_ATOMICS=libatomic python3 -c ...).
in_root() {
    chroot "$ARM64_ROOT" /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 TERM=dumb "$@"
}
