#!/bin/sh
# it_live: ./sim SCENARIO --target URL against a ./sim serve pod on loopback.
#  - every request of tests/data/scenarios/small-live.yaml completes, each with the
#    max_tokens it asked for (the pod honours ignore_eos), counted from the usage chunk;
#  - the live run's report files are the simulated run's files with the same keys, and
#    runs.db holds both runs when both write the same --out, and so does report.html's
#    "simulated and measured" table;
#  - the workload's inference-perf server: section is a target too (--live);
#  - a progress line per stage on stderr, none with --quiet;
#  - a target that refuses connections: every request failed as "connect", exit 1, no hang;
#    one that never answers, answers 503, sends a line that is not JSON or ends without
#    [DONE]: failed as timeout, http_status, stream and stream.
# Run from the repo root after `make all`.
S=./sim
[ -x $S ] || { echo "it_live: $S is not built (run make all)"; exit 1; }
SCN=tests/data/scenarios/small-live.yaml
B=$((30000 + ($$ % 200) * 10)); export B   # ports B..B+9 per test process
. tests/checks.sh

$S serve --replicas 1 --speedup 100 --port $B >"$D/serve.log" 2>&1 &
pids="$pids $!"
for _ in $(seq 50); do grep -q '^pod ' "$D/serve.log" && break; sleep 0.1; done
grep -q '^pod ' "$D/serve.log" || { echo "it_live: ./sim serve did not start:"; cat "$D/serve.log"; exit 1; }

$S $SCN --out "$D/out" --no-plots >"$D/sim.out" 2>&1
check "the simulated run" 0 $?
timeout 120 $S $SCN --target http://127.0.0.1:$B --target-label pod --out "$D/out" --no-plots >"$D/live.out" 2>"$D/live.err"
check "the live run exits 0" 0 $?
check "its console line counts every request completed" 1 \
    "$(grep -c '^pod (http://127.0.0.1:'$B'): 36 requests, 36 completed, 0 failed (connect 0, http_status 0, timeout 0, stream 0)' "$D/live.out")"
check "a progress line per stage on stderr" "pod stage 0: sent 20 completed 20 failed 0
pod stage 1: sent 16 completed 16 failed 0" \
    "$(sed -n 's/^\(pod stage [0-9]\): [0-9.]* s elapsed, \([0-9]*\) sent, \([0-9]*\) completed, \([0-9]*\) failed$/\1: sent \2 completed \3 failed \4/p' "$D/live.err")"

# reports and runs.db, read by python3's standard library
if python3 - "$D/out" >"$D/py.out" 2>&1 <<'PY'
import json, os, sqlite3, sys
out = sys.argv[1]
def shape(v):
    if isinstance(v, dict):
        return {k: shape(x) for k, x in v.items()}
    if isinstance(v, list):
        return [shape(v[0])] if v else []
    return type(v).__name__ if v is not None else None
sim, live = os.path.join(out, "rr"), os.path.join(out, "pod")
assert sorted(os.listdir(sim)) == sorted(os.listdir(live)), (os.listdir(sim), os.listdir(live))
for f in os.listdir(sim):
    if f.endswith(".json"):
        a, b = json.load(open(os.path.join(sim, f))), json.load(open(os.path.join(live, f)))
        assert shape(a) == shape(b), f
reqs = json.load(open(os.path.join(live, "per_request_lifecycle_metrics.json")))
assert len(reqs) == 36, len(reqs)
assert all(r["error"] is None and r["info"]["output_tokens"] == 12 for r in reqs), reqs[0]
for st, n in ((0, 20), (1, 16)):
    s = json.load(open(os.path.join(live, "stage_%d_lifecycle_metrics.json" % st)))
    assert s["successes"]["count"] == n and s["failures"]["count"] == 0, s["failures"]
    assert s["successes"]["latency"]["time_to_first_token"]["mean"] > 0
db = sqlite3.connect(os.path.join(out, "runs.db"))
runs = db.execute("SELECT router, config FROM runs ORDER BY run_id").fetchall()
assert runs == [("rr", "preset:k8s-service"), ("pod", "http://127.0.0.1:%s" % os.environ["B"])], runs
rows = db.execute("SELECT r.router, count(*), sum(q.failed), min(q.output_tokens), max(q.output_tokens) "
                  "FROM requests q JOIN runs r USING (run_id) GROUP BY r.router ORDER BY r.router").fetchall()
assert rows == [("pod", 36, 0, 12, 12), ("rr", 36, 0, 12, 12)], rows
assert db.execute("SELECT count(*) FROM stages s JOIN runs r USING (run_id) WHERE r.router = 'pod'").fetchone() == (2,)
# report.html: the simulated run's stages beside the measured one's
html = open(os.path.join(out, "report.html")).read()
t = html[html.index('<table id="runs">'):]
t = t[:t.index('</table>')]
for want in ('<tr><td>rr</td><td>preset:k8s-service</td><td>0</td>', '<tr><td>rr</td><td>preset:k8s-service</td><td>1</td>',
             '<tr><td>pod</td><td>http://127.0.0.1:%s</td><td>1</td>' % os.environ["B"]):
    assert want in t, (want, t)
PY
then ok "report files with the simulated run's keys; runs.db holds both runs, report.html shows both; 12 output tokens each"
else bad "report files with the simulated run's keys; runs.db holds both runs, report.html shows both; 12 output tokens each"; cat "$D/py.out"; fi

# inference-perf's server section in place of --target
sed "s|^  load:|  server: {type: vllm, model_name: Qwen/Qwen3-32B, base_url: \"http://127.0.0.1:$B\", ignore_eos: true}\n  load:|" \
    $SCN >"$D/server.yaml"
timeout 120 $S "$D/server.yaml" --live --out "$D/out2" --no-plots --quiet >"$D/srv.out" 2>"$D/srv.err"
check "--live takes workload.server.base_url; --quiet prints no progress" "0 0" "$? $(wc -c <"$D/srv.err")"
check "... its router name is the URL's host:port" 1 "$(ls "$D/out2" | grep -c "^127.0.0.1:$B\$")"

timeout 60 $S $SCN --target http://127.0.0.1:$((B + 1)) --out "$D/out3" --no-plots >"$D/ref.out" 2>"$D/ref.err"
check "a refused connection: exit 1, not a hang" 1 $?
check "... every request failed as connect" 1 \
    "$(grep -c '36 requests, 0 completed, 36 failed (connect 36, http_status 0, timeout 0, stream 0)' "$D/ref.out")"
check "... and said so on stderr" "sim: 36 of 36 requests to http://127.0.0.1:$((B + 1)) failed" "$(tail -1 "$D/ref.err")"
# a broken endpoint (tests/tools/bad_openai_server.py): each failure under its reason
P=$((B + 2))
for m in hang:timeout status:http_status garbage:stream nodone:stream; do
    mode=${m%%:*}; reason=${m#*:}
    python3 tests/tools/bad_openai_server.py $P $mode >"$D/bad.log" 2>&1 &
    bp=$!; pids="$pids $bp"
    for _ in $(seq 50); do grep -q ready "$D/bad.log" && break; sleep 0.1; done
    timeout 60 $S $SCN --target http://127.0.0.1:$P --timeout 0.5 --out "$D/bad-$mode" --no-plots >"$D/bad.out" 2>&1
    rc=$?
    n=$(sed -n "s/.*36 failed (.*$reason \([0-9]*\).*/\1/p" "$D/bad.out")
    check "$mode: exit 1, the 36 requests failed as $reason" "1 36" "$rc $n"
    kill $bp; wait $bp 2>/dev/null
    P=$((P + 1))
done
exit $fail
