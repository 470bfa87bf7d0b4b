#!/bin/sh
# it_doctor: `./kvctl doctor` against a running ./epp fed by ./sim serve's emulated vLLM
# pods, as a new user would meet "the score is always 0":
#  - pods publishing under the model requests ask for: doctor finds nothing, exit 0;
#  - requests asking for an alias of the pods' model (a --served-model-name mismatch):
#    the EPP counts and warns once, and doctor prints the finding with the fix, exit 1;
#  - /debug/endpoints, /debug/index and POST /debug/score answer, and the dry run
#    records nothing (no scheduling attempt is counted);
#  - the EPP binds --kv-events-zmq-endpoint instead of the config's zmqEndpoint;
#  - doctor exits 1 naming the URL when no EPP answers.
# Every port is picked free (the EPP's own: port 0, read back from its log).
# Run from the repo root after `make all` and the tools (make test-build).
S=./sim; E=./epp; K=./kvctl; T=build/rel/tests/bin/tools
for b in $S $E $K $T/extproc_route; do
    [ -x "$b" ] || { echo "it_doctor: $b is not built (run make test-build)"; exit 1; }
done
MODEL=Qwen/Qwen3-32B
. tests/checks.sh
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

ZP=$(free_port); HP=$(free_port)
$E --config-file policies/presets/llm-d-precise.yaml --kv-events-zmq-endpoint "tcp://127.0.0.1:$ZP" \
    --endpoints 127.0.0.1:$HP,127.0.0.2:$HP --grpc-port 0 --grpc-health-port 0 --metrics-port 0 \
    --secure-serving=false >"$D/epp.log" 2>&1 &
epp=$!; pids="$pids $epp"
for _ in $(seq 100); do grep -q "EPP started" "$D/epp.log" && break; sleep 0.05; done
GP=$(sed -n 's/.*grpc=\([0-9]*\).*/\1/p' "$D/epp.log")
MP=$(sed -n 's/.*metrics=\([0-9]*\).*/\1/p' "$D/epp.log")
[ -n "$GP" ] && [ -n "$MP" ] || { echo "it_doctor: ./epp did not start:"; cat "$D/epp.log"; exit 1; }
check "the EPP binds --kv-events-zmq-endpoint, not the config's tcp://*:5557" "tcp://127.0.0.1:$ZP" \
    "$(sed -n 's/.*"zmqEndpoint":"\([^"]*\)".*/\1/p' "$D/epp.log")"
for i in 1 2; do
    $S serve --host 127.0.0.$i --port $HP --kv-events-endpoint tcp://127.0.0.1:$ZP --speedup 20 >"$D/pod$i.log" 2>&1 &
    pids="$pids $!"
done
for i in 1 2; do
    for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.$i:$HP/health" && break; sleep 0.1; done
done
sleep 1   # the pods' PUB sockets connect to the EPP's SUB; the first scrapes land
EM=http://127.0.0.1:$MP
metric() { curl -s --max-time 5 "$EM/metrics" | awk -v m="$1" 'index($0, m) == 1 { print $NF; exit }'; }
prompt() { w=""; for k in $(seq 300); do w="$w w$1x$k"; done; echo "$w" | tr '0123456789' 'abcdefghij'; }
route() {   # model, prompt text: the picked endpoint
    printf '{"model":"%s","prompt":"%s","max_tokens":2}' "$1" "$2" >"$D/body.json"
    $T/extproc_route 127.0.0.1:$GP /v1/completions "$D/body.json"
}

# the healthy case: requests for the model the pods publish under
dest=$(route $MODEL "$(prompt 1)")
curl -s --max-time 20 "http://$dest/v1/completions" -H 'content-type: application/json' \
    -d "{\"model\":\"$MODEL\",\"prompt\":\"$(prompt 1)\",\"max_tokens\":2}" >/dev/null
sleep 0.5
$K doctor $EM >"$D/doc1.out" 2>&1; rc=$?
check "doctor on a healthy setup: exit 0" "0" "$rc"
grep -q "no known misconfiguration found" "$D/doc1.out" && ok "doctor says nothing is wrong" \
    || { bad "doctor says nothing is wrong"; cat "$D/doc1.out"; }
check "the routed pod's events are in the index" "ok" \
    "$(curl -s $EM/debug/endpoints | python3 -c 'import json,sys; e=[x for x in json.load(sys.stdin)["endpoints"]
if x["name"]==sys.argv[1]][0]; print("ok" if e["blocksHeld"]>0 and e["health"]=="ok" else e)' "$dest")"
check "/debug/index names the index's block size" "64" \
    "$(curl -s $EM/debug/index | python3 -c 'import json,sys; print(json.load(sys.stdin)["indexes"][0]["blockSize"])')"

# the dry run: the pick for the prompt just served, nothing counted
before=$(metric 'inference_extension_scheduler_attempts_total{status="success"}')
printf '{"model":"%s","prompt":"%s","max_tokens":2}' $MODEL "$(prompt 1)" >"$D/body.json"
curl -s $EM/debug/score --data-binary @"$D/body.json" >"$D/score.json"
check "POST /debug/score picks the pod holding the prompt" "$dest 1" \
    "$(python3 -c 'import json,sys; o=json.load(open(sys.argv[1])); s=[x for x in o["endpoints"][o["pick"][0]]["scores"]
if x["plugin"].endswith("/precise-prefix-cache-scorer")][0]; print(o["pick"][0], round(s["score"]))' "$D/score.json")"
check "the dry run is not counted as a scheduling attempt" "$before" \
    "$(metric 'inference_extension_scheduler_attempts_total{status="success"}')"

# the alias: requests ask for "qwen", the pods publish under Qwen/Qwen3-32B
route qwen "$(prompt 2)" >/dev/null
route qwen "$(prompt 3)" >/dev/null
$K doctor $EM >"$D/doc2.out" 2>&1; rc=$?
check "doctor on a model alias: exit 1" "1" "$rc"
grep -qF "PROBLEM model_mismatch: pod $dest, model '$MODEL'" "$D/doc2.out" && ok "doctor names the pod and the model" \
    || { bad "doctor names the pod and the model"; cat "$D/doc2.out"; }
grep -qF "fix: events for model $MODEL on pod $dest, requests ask for qwen: set --served-model-name" "$D/doc2.out" \
    && ok "doctor gives the fix" || { bad "doctor gives the fix"; cat "$D/doc2.out"; }
check "the cause is counted by reason, per request under the alias" "2" \
    "$(metric 'kvroute_score_zero_causes_total{reason="model_mismatch"}')"
check "and warned once" "1" "$(grep -c '"reason":"model_mismatch"' "$D/epp.log")"

kill $epp; wait $epp 2>/dev/null
$K doctor $EM >"$D/doc3.out" 2>&1; rc=$?
check "doctor without an EPP: exit 1 naming the URL" "1 yes" \
    "$rc $(grep -qF "$EM/debug/endpoints" "$D/doc3.out" && echo yes)"
exit $fail
