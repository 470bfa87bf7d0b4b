#!/bin/sh
# it_demo_live: make demo-live's pipeline (mk/demo-live.sh) at test size,
# tests/data/scenarios/demo-live-small.yaml (3 pods at speedup 20, 240 requests), through
# ./epp --http-port with the k8s-service and llm-d-precise presets. Asserts only what
# timing noise cannot move:
#  - every request of both live runs completes, and each response named the pod that
#    served it (x-gateway-destination-endpoint, one of the pods);
#  - per router, the prefix-cache hit rate the pods' own /metrics counters measured over
#    the run is within 10 points of the simulated one;
#  - under llm-d-precise, at least 90% of the requests whose prefix a pod already holds
#    go to a holder. The pods' state is known from the requests: nothing is evicted (the
#    KV capacity holds every prompt), so a pod holds a group's system prompt from the
#    first token of the group's first request it served; a request counts when that first
#    token came 50 ms (wall) or more before it was sent (the KV event's trip to ./epp);
#  - each pod's routed count (from the headers) equals what ./epp's decision log says it
#    routed there;
#  - ./sim compare prints both routers' rows, every cell filled, and exits 0;
#  - Ctrl-C (SIGINT to the process group, as a terminal sends it) while a live run is
#    under way stops every process the script started: the pods' and the gateway's
#    ports refuse connections afterwards, and it exits 130.
# Ports are free ones (mk/demo-live.sh finds them; ./epp binds port 0). Run from the repo
# root after `make all`.
for b in ./sim ./epp; do
    [ -x $b ] || { echo "it_demo_live: $b is not built (run make all)"; exit 1; }
done
SCN=tests/data/scenarios/demo-live-small.yaml
. tests/checks.sh

DEMO_DECISION_LOG=1 timeout 300 sh mk/demo-live.sh $SCN "$D/out" >"$D/demo.out" 2>"$D/demo.err"
check "the demo exits 0" 0 $?
check "the table has both routers' rows, every cell filled" "2 0" \
    "$(grep -c -E '^(k8s-service|llm-d-precise) +Requests/sec +[0-9.]+ +[0-9.]+ ' "$D/demo.out") $(sed -n '/^Router /,$p' "$D/demo.out" | tail -n +2 | grep -c ' - ')"
check "the table names the time base" 1 "$(grep -c '^Time base: wall clock at speedup 20 ' "$D/demo.out")"

if python3 - "$D/out" >"$D/py.out" 2>&1 <<'PY'
import os, sqlite3, sys
out = sys.argv[1]
db = sqlite3.connect(os.path.join(out, "runs.db"))
def run_id(router, live):
    return db.execute("SELECT max(run_id) FROM runs WHERE router = ? AND (config LIKE 'http://%') = ?",
                      (router + ("-live" if live else ""), live)).fetchone()[0]
for router in ("k8s-service", "llm-d-precise"):
    sim, live = run_id(router, 0), run_id(router, 1)
    assert sim and live, (router, sim, live)
    n, failed, unknown = db.execute("SELECT count(*), sum(failed), sum(endpoint < 0 OR endpoint > 2) FROM requests "
                                    "WHERE run_id = ?", (live,)).fetchone()
    n_sim = db.execute("SELECT count(*) FROM requests WHERE run_id = ?", (sim,)).fetchone()[0]
    assert n == n_sim == 240 and failed == 0 and unknown == 0, (router, n, n_sim, failed, unknown)
    sim_hit = db.execute("SELECT 100.0 * sum(cached_tokens) / sum(prompt_tokens) FROM requests WHERE run_id = ?",
                         (sim,)).fetchone()[0]
    rows = db.execute("SELECT prefix_cache_queries, prefix_cache_hits, routed FROM live_pods WHERE run_id = ? "
                      "ORDER BY pod", (live,)).fetchall()
    assert len(rows) == 3 and all(q is not None for q, _, _ in rows), rows
    live_hit = 100.0 * sum(h for _, h, _ in rows) / sum(q for q, _, _ in rows)
    print("%s: hit rate simulated %.1f%%, measured %.1f%%" % (router, sim_hit, live_hit))
    assert abs(live_hit - sim_hit) <= 10, (router, sim_hit, live_hit)
    # the decision log of this router's ./epp routed the same counts to each pod
    dl = sqlite3.connect(os.path.join(out, router + "-decisions.db"))
    logged = dict(dl.execute("SELECT target, count(*) FROM live_requests WHERE outcome = 'routed' GROUP BY target"))
    pods = [a for (a,) in db.execute("SELECT address FROM live_pods WHERE run_id = ? ORDER BY pod", (live,))]
    assert [logged.get(p, 0) for p in pods] == [r for _, _, r in rows], (router, logged, pods, rows)
    if router == "llm-d-precise":
        held, to_holder = 0, 0
        holders = {}                      # group -> {pod: first token time}
        for t_start, t_first, pod, group in db.execute(
                "SELECT t_start, t_first_token, endpoint, prefix_group FROM requests WHERE run_id = ? "
                "ORDER BY t_start", (live,)):
            hs = {p for p, t in holders.get(group, {}).items() if t <= t_start - 0.05}
            if hs:
                held += 1
                to_holder += pod in hs
            g = holders.setdefault(group, {})
            g[pod] = min(g.get(pod, t_first), t_first)
        print("llm-d-precise: %d of %d requests whose prefix a pod held went to a holder" % (to_holder, held))
        assert held >= 100 and to_holder >= 0.9 * held, (to_holder, held)
PY
then ok "every request completed on a named pod; hit rates within 10 points; precise routes to holders; decision log agrees"
else bad "every request completed on a named pod; hit rates within 10 points; precise routes to holders; decision log agrees"
fi
sed 's/^/  /' "$D/py.out"

# Ctrl-C during a live run: a new session, so SIGINT can go to the whole group as a terminal's would
if python3 - "$SCN" "$D/int" >"$D/int.out" 2>&1 <<'PY'
import os, re, signal, socket, subprocess, sys, time
p = subprocess.Popen(["sh", "mk/demo-live.sh", sys.argv[1], sys.argv[2]], stdout=subprocess.PIPE,
                     stderr=subprocess.STDOUT, start_new_session=True, text=True)
ports = None
for line in p.stdout:
    m = re.search(r"live: pods (\S+), gateway http://127.0.0.1:(\d+)", line)
    if m:
        ports = [int(a.split(":")[1]) for a in m.group(1).split(",")] + [int(m.group(2))]
        break
assert ports, "no live run started"
time.sleep(0.5)
os.killpg(p.pid, signal.SIGINT)
rest = p.stdout.read()
rc = p.wait(timeout=60)
print(rest)
assert rc == 130, rc
assert "interrupted, stopping what it started" in rest, rest
for port in ports:
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port))
        raise AssertionError("port %d still accepts connections" % port)
    except ConnectionRefusedError:
        pass
    finally:
        s.close()
print("ports closed:", ports)
PY
then ok "Ctrl-C mid-run: exit 130, the pods and the gateway are gone"
else bad "Ctrl-C mid-run: exit 130, the pods and the gateway are gone"; cat "$D/int.out"
fi
exit $fail
