# shellcheck shell=bash
# Shared by build-python.sh and debian-python.sh (sourced, not executed).

# The host's Debian mirror, from apt's own configuration (deb822 files, then sources.list);
# empty if there is none.
host_debian_mirror() {
    { cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true; } |
        awk '($1 == "URIs:" || $1 == "deb") && $2 ~ /\/debian\/?$/ { print $2; exit }'
}
