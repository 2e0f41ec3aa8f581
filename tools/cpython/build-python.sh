#!/usr/bin/env bash
# Build CPython VERSION (optionally free-threaded, ./configure --disable-gil) from Debian's
# python<VERSION> source package, for running ctshm's tests on an interpreter that neither
# pyenv nor PyPI can provide here.
#
#   tools/cpython/build-python.sh VERSION [--disable-gil] [--force]
#   tools/cpython/build-python.sh 3.14                 # -> /opt/ctshm-python3.14/bin/python3.14
#   tools/cpython/build-python.sh 3.14 --disable-gil   # -> /opt/ctshm-python3.14t/bin/python3.14t
#
# Why from source: no Debian suite ships a free-threaded binary package and PyPI distributes
# no CPython interpreters.  (Where the mirror lists python3.14's source but does not serve
# it, as here, this fails with the reason; tools/cpython/README.md.)  The source comes through `apt-get source` with a private apt configuration
# holding a deb-src entry for each of CTSHM_PY_SUITES in turn (default "sid forky trixie"),
# newest version first, until one downloads; the host's own apt setup is not touched.
# CTSHM_PY_SOURCE=/path/to/Python-X.Y.Z.tar.xz builds from that tarball instead.  The upstream
# tarball is built as is (no Debian patches, no PGO/LTO): configure, make -jN, make install.
#
# Environment: CTSHM_PY_PREFIX (default /opt/ctshm-python<VERSION>[t]), CTSHM_PY_SUITES,
# CTSHM_PY_MIRROR (default: the host apt's Debian mirror), CTSHM_PY_WORK (default
# /var/tmp/ctshm-cpython-build-<VERSION>[t]), CTSHM_PY_JOBS (default: nproc).
# Prints the interpreter's path on stdout, progress on stderr.  A completion marker
# ($PREFIX/.ctshm-build-complete, written last) makes a second run instant; a build that was
# interrupted has no marker and starts over; --force rebuilds.  Two runs for one prefix
# serialize on a lock.  Needs root (apt) and the build dependencies build-essential dpkg-dev
# libssl-dev libffi-dev zlib1g-dev (installed when missing).  ~10-20 min on 2 cores, ~250 MB.
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
log() { printf '[cpython-build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit "${2:-1}"; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

version="" gil="" force=0
for arg in "$@"; do
    case "$arg" in
        --disable-gil) gil=t ;;
        --force) force=1 ;;
        -h|--help) usage; exit 0 ;;
        3.[0-9]|3.[0-9][0-9]) version=$arg ;;
        *) die "unknown argument: $arg (use VERSION like 3.14, --disable-gil, --force, --help)" 2 ;;
    esac
done
[ -n "$version" ] || die "which version? e.g. $0 3.14 --disable-gil" 2
exe="python$version$gil"
PREFIX="${CTSHM_PY_PREFIX:-/opt/ctshm-$exe}"
SUITES="${CTSHM_PY_SUITES:-sid forky trixie}"
MIRROR="${CTSHM_PY_MIRROR:-$(host_debian_mirror)}"
[ -n "$MIRROR" ] || die "no Debian mirror in /etc/apt: set CTSHM_PY_MIRROR" 2
WORK="${CTSHM_PY_WORK:-/var/tmp/ctshm-cpython-build-$version$gil}"
JOBS="${CTSHM_PY_JOBS:-$(nproc)}"
MARKER="$PREFIX/.ctshm-build-complete"

# apt-get source, one suite at a time and newest version first: a mirror may list a source
# package in a suite's index yet answer 404 for its files (seen for sid's python3.13 and
# python3.14), so each (suite, version) is tried until one downloads.
fetch_debian_source() {
    local suite v apt
    for suite in $SUITES; do
        rm -rf "$WORK/apt"
        mkdir -p "$WORK/apt/lists/partial" "$WORK/apt/cache/partial"
        echo "deb-src $MIRROR $suite main" >"$WORK/apt/sources.list"
        apt=(-o "Dir::Etc::sourcelist=$WORK/apt/sources.list" -o "Dir::Etc::sourceparts=-"
             -o "Dir::State::Lists=$WORK/apt/lists" -o "Dir::Cache=$WORK/apt/cache"
             -o "APT::Get::List-Cleanup=0")
        apt-get -q "${apt[@]}" update >"$WORK/apt-update.log" 2>&1 ||
            { log "apt-get update for deb-src $suite failed"; continue; }
        for v in $(apt-cache "${apt[@]}" showsrc "python$version" 2>/dev/null |
                   awk '/^Version:/ { print $2 }' | sort -rV); do
            log "apt-get source python$version=$v (deb-src $suite)"
            if (cd "$WORK/src" && apt-get -q "${apt[@]}" source --download-only \
                    "python$version=$v" >"$WORK/apt-source.log" 2>&1); then
                return 0
            fi
            grep -E '^E:' "$WORK/apt-source.log" | head -n 2 >&2 || true
            last_error=$(grep -m1 -E '^E:' "$WORK/apt-source.log" | sed 's/ *\[IP:.*//; s/.*\///' || true)
            rm -f "$WORK"/src/*
        done
    done
    return 1
}

last_error=""
built() { [ -f "$MARKER" ] && [ -x "$PREFIX/bin/$exe" ]; }
if [ $force = 0 ] && built; then
    log "already built: $(tr '\n' ' ' <"$MARKER")"
    echo "$PREFIX/bin/$exe"
    exit 0
fi
[ "$(id -u)" = 0 ] || die "must run as root (apt-get)"
mkdir -p "$(dirname "$WORK")"
exec 9>"$WORK.lock"
flock 9    # a concurrent run for the same build waits here, then finds the marker
if [ $force = 0 ] && built; then
    log "built meanwhile by another run: $(tr '\n' ' ' <"$MARKER")"
    echo "$PREFIX/bin/$exe"
    exit 0
fi
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
mkdir -p "$WORK/src"
if [ -n "${CTSHM_PY_SOURCE:-}" ]; then
    tarball=$CTSHM_PY_SOURCE
    [ -f "$tarball" ] || die "CTSHM_PY_SOURCE=$tarball is not a file"
else
    fetch_debian_source || { rm -rf "$WORK"; die "no suite of [$SUITES] gave python$version's source (last: \
${last_error:-not listed}); CTSHM_PY_SOURCE=Python-$version.x.tar.xz builds from a tarball"; }
    tarball=$(ls "$WORK"/src/python"$version"_*.orig.tar.* | head -n1)
fi
log "unpacking $(basename "$tarball")"
tar -xf "$tarball" -C "$WORK/src"
srcdir=$(find "$WORK/src" -maxdepth 1 -type d -name "Python-$version*" | head -n1)
[ -d "$srcdir" ] || die "no Python-$version* folder in $tarball"
cd "$srcdir"
configure_args=(--prefix="$PREFIX" --with-ensurepip=install)
[ -n "$gil" ] && configure_args+=(--disable-gil)
log "configure ${configure_args[*]}"
./configure "${configure_args[@]}" >"$WORK/configure.log" 2>&1 ||
    { tail -20 "$WORK/configure.log" >&2; die "configure failed"; }
log "make -j$JOBS (log: $WORK/make.log)"
make_start=$(date +%s)
make -j"$JOBS" >"$WORK/make.log" 2>&1 || { tail -30 "$WORK/make.log" >&2; die "make failed"; }
make_seconds=$(( $(date +%s) - make_start ))
rm -rf "$PREFIX"
make install >"$WORK/install.log" 2>&1 || { tail -30 "$WORK/install.log" >&2; die "make install failed"; }
check='import sys, sysconfig; ft = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
assert ft == (sys.argv[1] == "t"), "free-threaded build: %s, wanted %r" % (ft, sys.argv[1])
assert sys.version.startswith(sys.argv[2] + "."), sys.version'
"$PREFIX/bin/$exe" -c "$check" "$gil" "$version" || die "$PREFIX/bin/$exe is not the build asked for"
printf 'version=%s\nfree_threaded=%s\nsource=%s\nbuilt=%s\njobs=%s\nmake_seconds=%s\nseconds=%s\n' \
    "$("$PREFIX/bin/$exe" -c 'import sys; print(sys.version.split()[0])')" \
    "$([ -n "$gil" ] && echo yes || echo no)" "$(basename "$tarball")" "$(date -u +%FT%TZ)" \
    "$JOBS" "$make_seconds" "$(( $(date +%s) - start ))" >"$MARKER.tmp"
mv "$MARKER.tmp" "$MARKER"
rm -rf "$WORK"
log "built $exe in $(( $(date +%s) - start )) s (make: $make_seconds s)"
echo "$PREFIX/bin/$exe"
