#!/usr/bin/env bash
# Build a free-threaded CPython (PEP 703, ./configure --disable-gil) from Debian's python3.13
# source package, for running ctshm's tests without the GIL.
#
#   tools/freethreaded/build-python.sh [--force]
#
# Why from source: no registry this project can reach ships a free-threaded CPython binary.
# Debian has no python3.13-nogil / python3.13t package in trixie, sid or experimental, and
# PyPI distributes no CPython interpreters (free-threaded builds come from python.org
# installers or GitHub-hosted standalone builds, both out of reach).  Debian's *source*
# package is reachable with apt: `apt-get source` (a deb-src entry for trixie is written to a
# private apt configuration; the host's own apt setup is not touched).
#
# Installs into CTSHM_FT_PREFIX (default /opt/ctshm-python3.13t); prints the interpreter's
# path on stdout.  Idempotent (a marker records the version built); --force rebuilds.
# Build dependencies (host apt): build-essential dpkg-dev libssl-dev libffi-dev zlib1g-dev.
# Takes ~6-10 minutes on 2 cores (no PGO/LTO), ~250 MB.  Needs root for apt.
set -euo pipefail
PREFIX="${CTSHM_FT_PREFIX:-/opt/ctshm-python3.13t}"
SUITE="${CTSHM_FT_SUITE:-trixie}"
MIRROR="${CTSHM_FT_MIRROR:-http://deb.debian.org/debian}"
WORK="${CTSHM_FT_WORK:-/var/tmp/ctshm-ft-build}"
MARKER="$PREFIX/.ctshm-ft-complete"
log() { printf '[freethreaded %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit "${2:-1}"; }

force=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) die "unknown argument: $arg (use --force or --help)" 2 ;;
    esac
done
if [ $force = 0 ] && [ -f "$MARKER" ] && [ -x "$PREFIX/bin/python3.13t" ]; then
    log "already built: $(cat "$MARKER")"
    echo "$PREFIX/bin/python3.13t"
    exit 0
fi
[ "$(id -u)" = 0 ] || die "must run as root (apt-get)"
start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
missing=()
for p in build-essential dpkg-dev libssl-dev libffi-dev zlib1g-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing build dependencies: ${missing[*]}"
    apt-get update -q >&2 && apt-get install -y -q "${missing[@]}" >&2
fi

rm -rf "$WORK"
mkdir -p "$WORK/apt/lists/partial" "$WORK/apt/cache/partial" "$WORK/src"
echo "deb-src $MIRROR $SUITE main" >"$WORK/apt/sources.list"
APT=(-o "Dir::Etc::sourcelist=$WORK/apt/sources.list" -o "Dir::Etc::sourceparts=-"
     -o "Dir::State::Lists=$WORK/apt/lists" -o "Dir::Cache=$WORK/apt/cache"
     -o "APT::Get::List-Cleanup=0")
log "apt-get source python3.13 (deb-src $SUITE)"
apt-get -q "${APT[@]}" update >&2
(cd "$WORK/src" && apt-get -q "${APT[@]}" source --download-only python3.13 >&2)
tarball=$(ls "$WORK"/src/python3.13_*.orig.tar.* | head -n1)
[ -n "$tarball" ] || die "no python3.13 orig tarball was downloaded"
log "unpacking $(basename "$tarball")"
tar -xf "$tarball" -C "$WORK/src"
srcdir=$(find "$WORK/src" -maxdepth 1 -type d -name 'Python-3.13*' | head -n1)
[ -d "$srcdir" ] || die "no Python-3.13* folder in $tarball"
cd "$srcdir"
log "configure --disable-gil --prefix=$PREFIX"
./configure --disable-gil --prefix="$PREFIX" --with-ensurepip=install \
    >"$WORK/configure.log" 2>&1 || { tail -20 "$WORK/configure.log" >&2; die "configure failed"; }
log "make -j$(nproc) (log: $WORK/make.log)"
make -j"$(nproc)" >"$WORK/make.log" 2>&1 || { tail -30 "$WORK/make.log" >&2; die "make failed"; }
rm -rf "$PREFIX"
make install >"$WORK/install.log" 2>&1 || { tail -30 "$WORK/install.log" >&2; die "make install failed"; }
"$PREFIX/bin/python3.13t" -c 'import sys; assert not sys._is_gil_enabled(), "GIL is on"' ||
    die "the build is not free-threaded"
printf 'version=%s\nsource=%s\nbuilt=%s\nseconds=%s\n' \
    "$("$PREFIX/bin/python3.13t" -c 'import sys; print(sys.version.split()[0])')" \
    "$(basename "$tarball")" "$(date -u +%FT%TZ)" "$(( $(date +%s) - start ))" >"$MARKER"
rm -rf "$WORK"
log "built in $(( $(date +%s) - start )) s"
echo "$PREFIX/bin/python3.13t"
