# sim_it: what the ./sim shell tests share, sourced after `set -u`: $SIM (the program,
# build/rel/bin/sim unless set), a scratch folder $tmp removed on exit, and fail().
SIM=${SIM:-build/rel/bin/sim}
[ -x "$SIM" ] || { echo "missing $SIM (make build/rel/bin/sim)"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
