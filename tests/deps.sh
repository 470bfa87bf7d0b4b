#!/bin/sh
# Installs the Debian packages kvroute needs, skipping those already present.
# Idempotent: a second run installs nothing and says so.
missing=""
for p in "$@"; do
    st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)
    [ "$st" = "installed" ] || missing="$missing $p"
done
if [ -z "$missing" ]; then
    echo "deps: all $# Debian packages present"
    exit 0
fi
echo "deps: installing:$missing"
if [ "$(id -u)" != 0 ]; then
    echo "deps: these packages are missing and installing them needs root:" >&2
    echo "      sudo apt-get install -y$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends $missing >/tmp/kvroute-apt.log 2>&1 || {
    apt-get update >>/tmp/kvroute-apt.log 2>&1
    apt-get install -y --no-install-recommends $missing >>/tmp/kvroute-apt.log 2>&1 || {
        echo "deps: apt-get failed; see /tmp/kvroute-apt.log" >&2; tail -20 /tmp/kvroute-apt.log >&2; exit 1; }
}
echo "deps: installed:$missing"
