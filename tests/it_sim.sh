#!/bin/sh
# it_sim: the ./sim program end to end — files written, byte-identical outputs for the
# same scenario and seed (every file compared), a different seed changing them, exit
# status 2 with file:line:col for a bad scenario and bad usage, and for a scenario too big
# for the machine's memory, 1 for a runtime failure; --router runs a subset; the progress
# line only on a terminal or with --progress, never with --quiet.
set -u
. tests/support/sim_it.sh

"$SIM" scenarios/small-shared-prefix.yaml --out "$tmp/a" --quiet >"$tmp/a.out" 2>"$tmp/a.err" || fail "run a: $(cat "$tmp/a.err")"
"$SIM" scenarios/small-shared-prefix.yaml --out "$tmp/b" --quiet >"$tmp/b.out" 2>"$tmp/b.err" || fail "run b"
for f in runs.db k8s-service/stage_0_lifecycle_metrics.json k8s-service/stage_1_lifecycle_metrics.json \
         k8s-service/summary_lifecycle_metrics.json k8s-service/per_request_lifecycle_metrics.json \
         "llm-d-precise/benchmark_report,_stage_1_lifecycle_metrics.json.yaml"; do
    [ -s "$tmp/a/$f" ] || fail "missing $f"
done
(cd "$tmp/a" && find . -type f | sort) >"$tmp/a.list"
(cd "$tmp/b" && find . -type f | sort) >"$tmp/b.list"
cmp -s "$tmp/a.list" "$tmp/b.list" || fail "the two runs wrote different file sets"
while read -r f; do
    cmp -s "$tmp/a/$f" "$tmp/b/$f" || fail "not byte-identical: $f"
done <"$tmp/a.list"
cmp -s "$tmp/a.out" "$tmp/b.out" || fail "console output differs between identical runs"
# ./sim re-runs itself with malloc's heap on huge pages where the kernel offers them
# (hugepage.h); naming the tunable keeps 4 KiB pages. Which pages hold the heap changes
# no byte.
GLIBC_TUNABLES=glibc.malloc.hugetlb=0 "$SIM" scenarios/small-shared-prefix.yaml --out "$tmp/h" --quiet >"$tmp/h.out" 2>&1 ||
    fail "run with 4 KiB pages: $(cat "$tmp/h.out")"
while read -r f; do
    cmp -s "$tmp/a/$f" "$tmp/h/$f" || fail "not byte-identical with the heap on 4 KiB pages: $f"
done <"$tmp/a.list"
grep -q "TTFT (s)" "$tmp/a.out" || fail "no comparison table on stdout"

"$SIM" scenarios/small-shared-prefix.yaml --out "$tmp/c" --seed 8 --quiet >/dev/null 2>&1 || fail "run with --seed"
cmp -s "$tmp/a/k8s-service/stage_1_lifecycle_metrics.json" "$tmp/c/k8s-service/stage_1_lifecycle_metrics.json" &&
    fail "--seed 8 gave the same stage report as seed 7"

"$SIM" tests/data/scenarios/bad-unknown-key.yaml --out "$tmp/x" >/dev/null 2>"$tmp/x.err"
[ $? -eq 2 ] || fail "bad scenario: exit status is not 2"
grep -q "bad-unknown-key.yaml:2:24: field 'cluster.gpus': unknown key" "$tmp/x.err" || fail "bad scenario message: $(cat "$tmp/x.err")"
"$SIM" tests/data/scenarios/bad-trace-missing.yaml --out "$tmp/x" >/dev/null 2>"$tmp/x.err"
[ $? -eq 2 ] || fail "missing trace: exit status is not 2"
grep -q "bad-trace-missing.yaml:7:37: field 'workload.data.trace.file': cannot open" "$tmp/x.err" || fail "missing trace message: $(cat "$tmp/x.err")"
"$SIM" >/dev/null 2>&1
[ $? -eq 2 ] || fail "no arguments: exit status is not 2"
"$SIM" scenarios/small-random.yaml --seed abc >/dev/null 2>&1
[ $? -eq 2 ] || fail "bad --seed: exit status is not 2"
"$SIM" scenarios/small-random.yaml --router nope --out "$tmp/r" >/dev/null 2>"$tmp/r.err"
[ $? -eq 2 ] || fail "unknown --router: exit status is not 2"
grep -q "no such router (least-queue, cache-only)" "$tmp/r.err" || fail "unknown --router message: $(cat "$tmp/r.err")"
"$SIM" scenarios/small-random.yaml --router cache-only --out "$tmp/r" --quiet >/dev/null 2>&1 || fail "--router cache-only"
[ -d "$tmp/r/cache-only" ] && [ ! -d "$tmp/r/least-queue" ] || fail "--router ran other routers"
# a scenario the machine cannot hold is refused at load time, naming the stage (the
# timeout keeps a simulator without the check from running for hours)
timeout 60 "$SIM" tests/data/scenarios/too-big-for-memory.yaml --out "$tmp/big" --quiet >/dev/null 2>"$tmp/big.err"
[ $? -eq 2 ] || fail "too big for memory: exit status is not 2: $(cat "$tmp/big.err")"
grep -q "too-big-for-memory.yaml: field 'workload.load.stages\[1\]' (100000000 requests): the run would need about .* GiB .*MemAvailable" \
    "$tmp/big.err" || fail "too big for memory message: $(cat "$tmp/big.err")"
[ ! -e "$tmp/big" ] || fail "too big for memory: output written before refusing"
"$SIM" scenarios/small-random.yaml --out "$tmp/p" --no-plots >/dev/null 2>"$tmp/p.err" || fail "run without --progress"
[ -s "$tmp/p.err" ] && fail "progress line on a stderr that is not a terminal: $(cat "$tmp/p.err")"
"$SIM" scenarios/small-random.yaml --out "$tmp/p" --no-plots --progress >/dev/null 2>"$tmp/p.err" || fail "--progress"
tr '\r' '\n' <"$tmp/p.err" | grep -q "cache-only *stage 1/1  sim [0-9.]* s  150/150 requests  wall [0-9.]* s  ETA 0 s" ||
    fail "--progress: no final progress line: $(cat "$tmp/p.err")"
"$SIM" scenarios/small-random.yaml --out "$tmp/p" --no-plots --progress --quiet >/dev/null 2>"$tmp/p.err" || fail "--progress --quiet"
[ -s "$tmp/p.err" ] && fail "progress line despite --quiet"
touch "$tmp/file"
"$SIM" scenarios/small-random.yaml --out "$tmp/file/sub" --quiet >/dev/null 2>"$tmp/y.err"
[ $? -eq 1 ] || fail "unwritable output: exit status is not 1"
grep -q "sim: " "$tmp/y.err" || fail "unwritable output: no message"
"$SIM" tests/data/scenarios/small-llmd-guides.yaml --out "$tmp/g" --quiet >/dev/null 2>"$tmp/g.err" ||
    fail "llm-d guide configs as routers: $(cat "$tmp/g.err")"
[ "$(sqlite3 "$tmp/g/runs.db" "SELECT events_delivered > 0 FROM runs WHERE router = 'precise-routing'")" = 1 ] ||
    fail "the precise producer of the guide config got no KV events"
echo "it_sim: ok"
