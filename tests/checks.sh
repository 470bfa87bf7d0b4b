# checks.sh: sourced by the shell tests that start servers (it_serve.sh, it_live.sh):
# a scratch folder $D (kept when KEEP is set, and then named), the pids to
# stop at exit ($pids), and ok/bad/check lines that set $fail. Not a test itself.
D=$(mktemp -d); [ -n "$KEEP" ] && echo "$(basename "$0" .sh): keeping $D"
pids=""
fail=0
cleanup() { for p in $pids; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; [ -n "$KEEP" ] || rm -rf "$D"; }
trap cleanup EXIT
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fail=1; }
check() { if [ "$3" = "$2" ]; then ok "$1"; else bad "$1"; echo "  want: $2"; echo "  got:  $3"; fi; }
