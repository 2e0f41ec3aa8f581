#!/usr/bin/env bash
# CPython VERSION as Debian ships it (binary packages of a newer suite, default sid), in a
# native amd64 userland of that suite: for an interpreter this host's Debian lacks and whose
# source the mirror does not serve (python3.14: see tools/cpython/README.md).
#
#   tools/cpython/debian-python.sh build VERSION
#   tools/cpython/debian-python.sh run VERSION [--bind DIR]... [--] COMMAND [ARG...]
#
# build: debootstrap --variant=minbase SUITE with python<VERSION>, python<VERSION>-venv,
#   ca-certificates and libatomic1 into CTSHM_DEB_ROOT (default
#   /var/tmp/ctshm-debian-python<VERSION>); a marker written last records what was built, so
#   a second call is instant; a folder without it (an interrupted build, other settings) is
#   removed and built again.  Prints the root.
# run: COMMAND under chroot in that userland, with /proc, /dev and the host's /dev/shm
#   mounted (POSIX shm and named semaphores are host-visible, so leftovers are seen), each
#   --bind DIR (and the current folder) bind-mounted at the same path, the current folder
#   kept, /etc/resolv.conf and the host's CA bundle copied (pip reaches PyPI).  The
#   environment is cleared except PATH/HOME/LANG and the variables PYTHON_GIL, PYTHONPATH,
#   SEEDREF_BIN, CI, CTSHM_*.  Everything is unmounted on exit; runs on one root take turns.
#
# Settings: CTSHM_DEB_SUITE (sid), CTSHM_DEB_MIRROR (the host apt's
# Debian mirror),
# CTSHM_DEB_ROOT.  Needs root and debootstrap (installed when missing).  ~3 min, ~290 MB.
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
log() { printf '[debian-python %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit "${2:-1}"; }

[ $# -ge 2 ] || die "usage: $0 build VERSION | run VERSION [--bind DIR]... [--] COMMAND..." 2
cmd=$1 version=$2
shift 2
case "$version" in 3.[0-9]|3.[0-9][0-9]) ;; *) die "VERSION like 3.14, not $version" 2 ;; esac
SUITE="${CTSHM_DEB_SUITE:-sid}"
MIRROR="${CTSHM_DEB_MIRROR:-$(host_debian_mirror)}"
[ -n "$MIRROR" ] || die "no Debian mirror in /etc/apt: set CTSHM_DEB_MIRROR" 2
ROOT="${CTSHM_DEB_ROOT:-/var/tmp/ctshm-debian-python$version}"
ROOT="${ROOT%/}"
case "$ROOT" in
    /|/bin|/boot|/dev|/etc|/home|/lib|/opt|/proc|/root|/run|/sys|/tmp|/usr|/var|/var/tmp)
        die "refusing CTSHM_DEB_ROOT=$ROOT: give a folder of its own" 2 ;;
esac
MARKER="$ROOT/.ctshm-userland-complete"
PACKAGES="python$version,python$version-venv,ca-certificates,libatomic1"
want="suite=$SUITE
mirror=$MIRROR
packages=$PACKAGES"
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, mount)"

mkdir -p "$(dirname "$ROOT")"
exec 9>"$ROOT.lock"
flock 9

mounts_below_root() {  # deepest first, from the kernel's table
    awk -v r="$ROOT" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/mounts | sort -r
}
unmount_all() {
    local m
    for _ in 1 2 3; do
        for m in $(mounts_below_root); do umount "$m" 2>/dev/null || umount -l "$m" || true; done
    done
    [ -z "$(mounts_below_root)" ] || { log "still mounted: $(mounts_below_root | tr '\n' ' ')"; return 1; }
}
built() { [ -f "$MARKER" ] && [ "$(grep -v '^built=\|^seconds=\|^version=' "$MARKER")" = "$want" ]; }

build() {
    if built; then
        log "already built: $(tr '\n' ' ' <"$MARKER")"
        return 0
    fi
    local start
    start=$(date +%s)
    if ! command -v debootstrap >/dev/null; then
        log "installing debootstrap"
        { apt-get install -y -q --no-install-recommends debootstrap ||
          { apt-get update -q && apt-get install -y -q --no-install-recommends debootstrap; }; } >&2
    fi
    unmount_all || die "cannot unmount everything below $ROOT: not removing it"
    rm -rf --one-file-system "$ROOT"
    log "debootstrap $SUITE minbase + $PACKAGES from $MIRROR into $ROOT"
    # bookworm's debootstrap has no script for suites newer than trixie: sid's fits them all.
    debootstrap --variant=minbase --include="$PACKAGES" \
        --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
        "$SUITE" "$ROOT" "$MIRROR" /usr/share/debootstrap/scripts/sid >"$ROOT.debootstrap.log" 2>&1 ||
        { tail -20 "$ROOT.debootstrap.log" >&2; unmount_all || true; die "debootstrap failed"; }
    unmount_all
    chroot "$ROOT" apt-get clean
    local v
    v=$(chroot "$ROOT" "/usr/bin/python$version" -c 'import sys; print(sys.version.split()[0])') ||
        die "python$version does not run in $ROOT"
    printf '%s\nversion=%s\nbuilt=%s\nseconds=%s\n' "$want" "$v" "$(date -u +%FT%TZ)" \
        "$(( $(date +%s) - start ))" >"$MARKER"
    rm -f "$ROOT.debootstrap.log"
    log "built $ROOT (python $v) in $(( $(date +%s) - start )) s"
}

run() {
    local binds=("$PWD") d
    while [ $# -gt 0 ]; do
        case "$1" in
            --bind) [ $# -ge 2 ] || die "--bind needs a folder" 2; binds+=("$2"); shift 2 ;;
            --) shift; break ;;
            *) break ;;
        esac
    done
    [ $# -gt 0 ] || die "run: no command" 2
    built || die "no python$version userland in $ROOT: run '$0 build $version' first" 3
    trap 'unmount_all || true' EXIT
    mkdir -p "$ROOT/proc" "$ROOT/dev"
    mount -t proc proc "$ROOT/proc"
    mount --bind /dev "$ROOT/dev"
    mountpoint -q "$ROOT/dev/shm" || mount --bind /dev/shm "$ROOT/dev/shm"
    for d in "${binds[@]}"; do
        d=$(cd "$d" && pwd -P)
        mountpoint -q "$ROOT$d" && continue
        mkdir -p "$ROOT$d"
        mount --bind "$d" "$ROOT$d"
    done
    cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
    # The host's CA bundle (it may hold a CA that a proxy between here and PyPI signs with).
    cp -L /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ctshm-host-ca.crt"
    local envs=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
                LANG=C.UTF-8 TERM=dumb PIP_CERT=/etc/ssl/certs/ctshm-host-ca.crt
                SSL_CERT_FILE=/etc/ssl/certs/ctshm-host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1) v
    for v in $(compgen -e); do
        case "$v" in PYTHON_GIL|PYTHONPATH|SEEDREF_BIN|CI|CTSHM_*) envs+=("$v=${!v}") ;; esac
    done
    local rc=0
    chroot "$ROOT" /usr/bin/env -i "${envs[@]}" /bin/sh -c 'cd "$1" && shift && exec "$@"' \
        sh "$(pwd -P)" "$@" || rc=$?
    return $rc
}

case "$cmd" in
    build) build; echo "$ROOT" ;;
    run) run "$@" ;;
    *) die "unknown command $cmd (build or run)" 2 ;;
esac
