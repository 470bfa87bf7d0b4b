#!/bin/sh
# demo-live: the simulator's prediction and the live path's measurement of one scenario,
# side by side (make demo-live; tests/it_demo_live.sh and bench_demo_live run it smaller).
#
#   sh mk/demo-live.sh [SCENARIO [OUT]]   (default scenarios/rate60-live.yaml, runs/<its name>)
#
# 1. ./sim SCENARIO --out OUT: the simulation of every router (it replaces OUT/runs.db).
# 2. Per router of the scenario (each a `preset:`), in turn: fresh `./sim serve SCENARIO`
#    pods (the scenario's cluster and speedup; a new process, so caches and counters start
#    empty), `./epp --http-port` with the router's preset (KV events bound where the pods'
#    publishers connect, the pods' /metrics scraped), then the live run
#    `./sim SCENARIO --target <gateway> --target-label <router>-live --target-pods <pods>`
#    into the same OUT; then that router's processes stop.
# 3. ./sim compare SCENARIO --out OUT: the table.
# OUT/charts keeps the simulation's charts (a live run would replace them with its own).
# Ports: the pods' and the ZMQ port are free ones found at start; ./epp's are the kernel's.
# Everything it started is stopped on exit, on error and on Ctrl-C. Exit status: the
# first failing step's (a live run with failed requests: 1), else compare's.
# Env: SIM, EPP (default ./sim, ./epp); DEMO_DECISION_LOG=1: each ./epp also writes
# OUT/<router>-decisions.db (--decision-log).
set -u
SIM=${SIM:-./sim}
EPP=${EPP:-./epp}
SCN=${1:-scenarios/rate60-live.yaml}
for b in "$SIM" "$EPP"; do
    [ -x "$b" ] || { echo "demo-live: $b is not built (run make)" >&2; exit 1; }
done
[ -f "$SCN" ] || { echo "demo-live: $SCN: no such scenario" >&2; exit 2; }
NAME=$(sed -n 's/^name: *\([A-Za-z0-9._-]*\).*/\1/p' "$SCN" | head -1)
[ -n "$NAME" ] || NAME=$(basename "$SCN" .yaml)
OUT=${2:-runs/$NAME}
PRESETS=$(dirname "$0")/../policies/presets

pids=""
stop() {
    for p in $pids; do kill "$p" 2>/dev/null; done
    for p in $pids; do wait "$p" 2>/dev/null; done
    pids=""
}
trap stop EXIT
trap 'echo "demo-live: interrupted, stopping what it started" >&2; stop; exit 130' INT TERM HUP

mkdir -p "$OUT" || exit 1
LOG=$OUT/demo-live-logs
mkdir -p "$LOG"

# REPLICAS + 1 consecutive ports that nothing listens on (pods P..P+N-1, ZMQ P+N)
free_base() {
    python3 - "$1" <<'PY'
import random, socket, sys
n = int(sys.argv[1])
for _ in range(200):
    base = random.randint(20000, 60000 - n)
    socks = []
    try:
        for p in range(base, base + n):
            s = socket.socket(); s.bind(("127.0.0.1", p)); socks.append(s)
    except OSError:
        continue
    finally:
        for s in socks: s.close()
    print(base); sys.exit(0)
sys.exit(1)
PY
}

# waits (up to $3 s) until file $1 has a line matching $2
wait_line() {
    i=0
    while ! grep -q "$2" "$1" 2>/dev/null; do
        i=$((i + 1)); [ $i -gt $(($3 * 10)) ] && return 1
        sleep 0.1
    done
}

# waits until ./epp at metrics port $1 has scraped every pod at least twice
wait_scraped() {
    python3 - "$1" "$REPLICAS" <<'PY'
import sys, time, urllib.request
port, n = sys.argv[1], int(sys.argv[2])
for _ in range(300):
    try:
        text = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % port, timeout=2).read().decode()
        done = sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith("kvroute_metrics_scrapes_total"))
        if done >= 2 * n:
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(1)
PY
}

echo "demo-live: simulating $SCN into $OUT/"
"$SIM" "$SCN" --out "$OUT" >"$LOG/sim.out" 2>&1 || { echo "demo-live: the simulation failed:" >&2; cat "$LOG/sim.out" >&2; exit 1; }
# the cluster and the routers as the simulator read them: "NAME: N x MODEL ..." and
# "ROUTER (preset:P): ..." (a router from a config: file would need its own ./epp setup)
REPLICAS=$(sed -n "s/^$NAME: \([0-9]*\) x .*/\1/p" "$LOG/sim.out" | head -1)
ROUTERS=$(sed -n 's/^\([A-Za-z0-9._-]*\) (preset:\([A-Za-z0-9._-]*\)): [0-9]* requests.*/\1:\2/p' "$LOG/sim.out")
[ -n "$REPLICAS" ] && [ -n "$ROUTERS" ] ||
    { echo "demo-live: $SCN: no cluster or no preset routers in the simulation's output ($LOG/sim.out)" >&2; exit 2; }
rm -rf "$OUT/charts-sim" && { [ ! -d "$OUT/charts" ] || mv "$OUT/charts" "$OUT/charts-sim"; }

status=0
for r in $ROUTERS; do
    router=${r%%:*}; preset=${r#*:}
    base=$(free_base $((REPLICAS + 1))) || { echo "demo-live: no free ports" >&2; exit 1; }
    zmq=$((base + REPLICAS))
    pods=""; i=0
    while [ $i -lt "$REPLICAS" ]; do pods="$pods${pods:+,}127.0.0.1:$((base + i))"; i=$((i + 1)); done
    sed "s#tcp://\*:5557#tcp://127.0.0.1:$zmq#" "$PRESETS/$preset.yaml" >"$LOG/$router.yaml" || exit 1

    "$SIM" serve "$SCN" --port "$base" --kv-events-endpoint "tcp://127.0.0.1:$zmq" >"$LOG/$router-pods.log" 2>&1 &
    pids="$pids $!"
    wait_line "$LOG/$router-pods.log" "^pod $((REPLICAS - 1)):" 30 ||
        { echo "demo-live: ./sim serve did not start:" >&2; cat "$LOG/$router-pods.log" >&2; exit 1; }
    dlog=""
    [ -n "${DEMO_DECISION_LOG:-}" ] && dlog="--decision-log $OUT/$router-decisions.db" && rm -f "$OUT/$router-decisions.db"
    # shellcheck disable=SC2086
    "$EPP" --config-file "$LOG/$router.yaml" --endpoints "$pods" --secure-serving=false --grpc-port -1 \
        --http-port 0 --grpc-health-port 0 --metrics-port 0 $dlog >"$LOG/$router-epp.log" 2>&1 &
    pids="$pids $!"
    wait_line "$LOG/$router-epp.log" "EPP started" 30 ||
        { echo "demo-live: ./epp did not start:" >&2; tail -5 "$LOG/$router-epp.log" >&2; exit 1; }
    http=$(sed -n 's/.*EPP started.*http=\([0-9]*\).*/\1/p' "$LOG/$router-epp.log" | head -1)
    metrics=$(sed -n 's/.*EPP started.*metrics=\([0-9]*\).*/\1/p' "$LOG/$router-epp.log" | head -1)
    wait_scraped "$metrics" || { echo "demo-live: ./epp never scraped the pods" >&2; exit 1; }

    echo "demo-live: $router live: pods $pods, gateway http://127.0.0.1:$http"
    "$SIM" "$SCN" --target "http://127.0.0.1:$http" --target-label "$router-live" --target-pods "$pods" --no-plots \
        --out "$OUT" >"$LOG/$router-live.out" 2>"$LOG/$router-live.err"
    rc=$?
    if [ $rc -ne 0 ]; then
        echo "demo-live: the live run against $router exited $rc:" >&2; tail -5 "$LOG/$router-live.err" >&2
        [ $status -ne 0 ] || status=$rc
    fi
    stop
done
rm -rf "$OUT/charts"
[ ! -d "$OUT/charts-sim" ] || mv "$OUT/charts-sim" "$OUT/charts"

echo
"$SIM" compare "$SCN" --out "$OUT"
rc=$?
echo "(simulated and live runs in $OUT/runs.db; logs in $LOG/)"
[ $status -ne 0 ] && exit $status
exit $rc
