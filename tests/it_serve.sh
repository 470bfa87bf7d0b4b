#!/bin/sh
# it_serve: ./sim serve's emulated vLLM pods on loopback, checked from outside:
#  - a bad flag value: one message naming the flag, and exit 2;
#  - an independent client (tests/tools/sse_client.py, python3 standard library) reads
#    both endpoints streamed and whole, checks the chunk format, [DONE] and usage;
#  - KV events read by msgpack-c (kv_msgpack_check) and by ./kvctl, array and map
#    encodings; a repeated prompt stores no new block and shows as prefix-cache hits
#    in /metrics; a client's disconnect aborts its request; --fail-rate 1 answers 500;
#    /metrics stops answering on request;
#  - ./epp routes on the pods' events (ext-proc requests by tools/extproc_route), text
#    prompts rendered by the pods' /v1/completions/render: a repeated prompt goes to the pod holding it, batches dropped by the pods are
#    fetched through their replay sockets, and a pod restart clears its blocks in the
#    index (the decision log's precise-prefix-cache-scorer score for it drops to 0);
#  - with token-producer's vllm.url, a separate ./sim serve renders chat and text prompts;
#    when it is gone, requests are still routed and the failure is counted and logged.
# Run from the repo root after `make all` and the tools (make test-build).
S=./sim; E=./epp; K=./kvctl; T=build/rel/tests/bin/tools
for b in $S $E $K $T/kv_msgpack_check $T/extproc_route; do
    [ -x "$b" ] || { echo "it_serve: $b is not built (run make test-build)"; exit 1; }
done
MODEL=Qwen/Qwen3-32B
B=$((10000 + ($$ % 200) * 100))   # ports B..B+99 per test process, below the ephemeral range
. tests/checks.sh
serve() {   # log, args...: starts ./sim serve, waits for its pod lines
    log=$1; shift
    $S serve "$@" >"$log" 2>&1 &
    pids="$pids $!"
    for _ in $(seq 50); do grep -q '^pod ' "$log" && return 0; sleep 0.1; done
    echo "it_serve: ./sim serve did not start:"; cat "$log"; exit 1
}
metric() {   # url, series name prefix: its value
    curl -s --max-time 5 "$1/metrics" | awk -v m="$2" 'index($0, m) == 1 { print $NF; exit }'
}
ids() {   # n, first: a token-id prompt list "first,...,first+n-1"
    seq -s, "$2" $(($2 + $1 - 1))
}
complete() {   # pod url, prompt json, max_tokens
    curl -s --max-time 20 "$1/v1/completions" -H 'content-type: application/json' \
        -d "{\"model\":\"$MODEL\",\"prompt\":$2,\"max_tokens\":$3}" >/dev/null
}

# --- flags: one message for each bad value, naming the flag, and exit 2 -------------------
check "a value that is not a number: its message, once" "sim serve: --port: 'abc' is not a number in [1, 65535]" \
    "$($S serve --port abc 2>&1 >/dev/null)"
check "a value that is not a number: exit 2" "2" "$($S serve --port abc >/dev/null 2>&1; echo $?)"
check "a value that is not an integer" "sim serve: --replicas: '2.5' is not an integer" \
    "$($S serve --replicas 2.5 2>&1 >/dev/null)"
check "a flag without its value" "sim serve: --port needs a value" "$($S serve --port 2>&1 >/dev/null)"

# --- one pod per process: API, events, metrics, faults ------------------------------------
P=$B
serve "$D/a.log" --replicas 2 --port $P --kv-events-port $((B + 10)) --speedup 20
check "one line per pod with its URL and KV-event endpoint" \
    "pod 0: http://127.0.0.1:$P  kv-events tcp://127.0.0.1:$((B + 10)) (bind)  replay off  model $MODEL" \
    "$(sed -n 1p "$D/a.log")"
check "pod 1 listens on port+1" "200" "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$((P + 1))/health)"
# ./sim runs with malloc's heap on huge pages where THP is "madvise": it re-ran itself with
# the tunable added to its environment (hugepage.h)
if grep -q '\[madvise\]' /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null; then want=1; else want=0; fi
check "./sim re-ran with glibc.malloc.hugetlb=1 where THP is madvise" "$want" \
    "$(tr '\0' '\n' </proc/${pids##* }/environ | grep -c '^GLIBC_TUNABLES=.*glibc\.malloc\.hugetlb=1')"
if python3 tests/tools/sse_client.py 127.0.0.1:$P $MODEL >"$D/sse.out" 2>&1; then ok "SSE and whole responses (independent client)"
else bad "SSE and whole responses (independent client)"; cat "$D/sse.out"; fi

$T/kv_msgpack_check tcp://127.0.0.1:$((B + 11)) 1 5000 >"$D/mp.out" 2>&1 &
mp=$!
$K listen tcp://127.0.0.1:$((B + 11)) >"$D/kl.out" 2>&1 &
kl=$!; pids="$pids $kl"
sleep 0.5   # both subscriptions are up (a PUB drops what no one subscribed to yet)
U=http://127.0.0.1:$((P + 1))
complete $U "[$(ids 130 1000)]" 2
complete $U "[$(ids 130 1000)]" 2
wait $mp
check "msgpack-c reads [topic, seq, KVEventBatch]: one BlockStored of 2 blocks" \
    "kv@127.0.0.1:$((P + 1))@$MODEL 0 BlockStored 2 128" "$(cat "$D/mp.out")"
sleep 0.3; kill $kl
check "kvctl decodes the pod's events: the repeated prompt stored no new block" "1" \
    "$(grep -c '"type":"BlockStored"' "$D/kl.out")"
check "prefix-cache queries count both prompts" "260.0" "$(metric $U 'vllm:prefix_cache_queries_total{')"
check "the repeat shows as 128 prefix-cache hit tokens" "128.0" "$(metric $U 'vllm:prefix_cache_hits_total{')"
check "cache_config_info carries block size and GPU blocks" "1" \
    "$(curl -s $U/metrics | grep -c '^vllm:cache_config_info{block_size="64",.*num_gpu_blocks="[0-9]*"} 1.0$')"
curl -s -X POST $U/admin/metrics/off >/dev/null
curl -s --max-time 1 $U/metrics >/dev/null; rc=$?
check "a pod told to stop answering /metrics times the scraper out" "28" "$rc"
curl -s -X POST $U/admin/metrics/on >/dev/null
check "... and answers again when told" "200" "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 $U/metrics)"

timeout 0.5 curl -sN $U/v1/completions -d '{"prompt":"the cat","max_tokens":5000,"stream":true}' >/dev/null
sleep 0.5
check "a client that disconnects aborts its request (no request left running)" "0.0" \
    "$(metric $U 'vllm:num_requests_running{')"

serve "$D/m.log" --port $((B + 2)) --kv-events-port $((B + 12)) --kv-events-encoding map --fail-rate 1
$T/kv_msgpack_check tcp://127.0.0.1:$((B + 12)) 1 5000 >"$D/mp2.out" 2>&1 &
mp=$!; sleep 0.5
curl -s -X POST http://127.0.0.1:$((B + 2))/admin/restart >/dev/null
wait $mp
check "map encoding: the restart's AllBlocksCleared at seq 0" "kv@127.0.0.1:$((B + 2))@$MODEL 0 AllBlocksCleared 0 0" \
    "$(cat "$D/mp2.out")"
code=$(curl -s -o "$D/f.json" -w '%{http_code}' http://127.0.0.1:$((B + 2))/v1/completions -d '{"prompt":"a b"}')
check "--fail-rate 1 answers 500 with an OpenAI error body" "500 InternalServerError" \
    "$code $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["error"]["type"])' "$D/f.json")"

# --- ./epp routing on two pods' events (one pod per loopback address) ---------------------
Z=$((B + 30)); R=$((B + 31)); HP=$((B + 40))
for i in 1 2; do
    serve "$D/e$i.log" --host 127.0.0.$i --port $HP --kv-events-endpoint tcp://127.0.0.1:$Z --replay-port $R \
        --drop-event-batches 0.3 --speedup 20
done
sed "s#tcp://\*:5557#tcp://127.0.0.1:$Z#" policies/presets/llm-d-precise.yaml >"$D/epp.yaml"
$E --config-file "$D/epp.yaml" --endpoints 127.0.0.1:$HP,127.0.0.2:$HP --grpc-port $((B + 32)) \
    --grpc-health-port $((B + 33)) --metrics-port $((B + 34)) --secure-serving=false \
    --kv-events-replay-endpoint $R --decision-log "$D/dec.db" >"$D/epp.log" 2>&1 &
epp=$!; pids="$pids $epp"
for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:$((B + 34))/metrics && break; sleep 0.1; done
sleep 1   # the pods' PUB sockets connect to the EPP's SUB
route() {   # prompt text: the picked endpoint
    printf '{"model":"%s","prompt":"%s","max_tokens":2}' $MODEL "$1" >"$D/body.json"
    $T/extproc_route 127.0.0.1:$((B + 32)) /v1/completions "$D/body.json"
}
text() {   # n: a prompt of 6 x 70 one-token words, distinct per n
    w=""; for k in $(seq 420); do w="$w w$1x$k"; done
    echo "$w" | tr '0123456789' 'abcdefghij'
}
: >"$D/first"
for n in 1 2 3 4 5 6; do
    dest=$(route "$(text $n)")
    echo "$n $dest" >>"$D/first"
    complete "http://$dest" "\"$(text $n)\"" 2
done
for i in 1 2; do for k in 1 2 3; do complete "http://127.0.0.$i:$HP" "[$(ids 100 $((i * 5000 + k * 200)))]" 1; done; done
sleep 0.5
same=0
while read -r n dest; do [ "$(route "$(text $n)")" = "$dest" ] && same=$((same + 1)); done <"$D/first"
check "./epp sends each repeated prompt to the pod that holds it (6 of 6)" "6" "$same"
EM=http://127.0.0.1:$((B + 34))
lost=$(metric $EM 'kvroute_kv_events_gaps_total'); rep=$(metric $EM 'kvroute_kv_events_replayed_batches_total')
[ "${lost:-0}" -gt 0 ] && [ "${rep:-0}" -gt 0 ] && ok "dropped batches were fetched by replay (gaps $lost, replayed $rep)" \
    || bad "dropped batches were fetched by replay (gaps ${lost:-?}, replayed ${rep:-?})"
check "no replay failed" "0" "$(metric $EM 'kvroute_kv_events_replay_failures_total')"
check "./epp rendered each text prompt on a pod's /v1/completions/render (12 of 12)" "12" \
    "$(metric $EM 'kvroute_tokenize_requests_total{endpoint="render"}')"
check "no prompt fell back to /tokenize or failed" "0 0 0 0 0 0" \
    "$(curl -s $EM/metrics | awk '/^kvroute_tokenize_(requests_total\{endpoint="tokenize"|failures_total)/ { printf "%s ", $NF }' | sed 's/ $//')"
dest=$(awk '$1 == 1 { print $2 }' "$D/first")
curl -s -X POST "http://$dest/admin/restart" >/dev/null
sleep 0.5
route "$(text 1)" >/dev/null
kill $epp; wait $epp 2>/dev/null
scores=$(sqlite3 "$D/dec.db" "SELECT d.score FROM decisions d JOIN endpoints e USING (run_id, endpoint) \
    WHERE d.plugin LIKE 'precise%' AND e.name = '$dest' AND d.request_id IN (6, 12) ORDER BY d.request_id" | tr '\n' ' ')
check "after the pod's restart its precise score for the prompt it held drops from 1 to 0" "1.0 0.0 " "$scores"

# --- a separate render server (token-producer's vllm.url), as the precise guide deploys ------
RP=$((B + 45))
serve "$D/r.log" --host 127.0.0.3 --port $RP --speedup 20
rpid=${pids##* }
{ echo 'plugins:'; echo '- type: token-producer'
  echo "  parameters: {modelName: $MODEL, vllm: {url: \"http://127.0.0.3:$RP\"}}"; sed 1d "$D/epp.yaml"; } >"$D/epp2.yaml"
$E --config-file "$D/epp2.yaml" --endpoints 127.0.0.1:$HP,127.0.0.2:$HP --grpc-port $((B + 35)) \
    --grpc-health-port $((B + 36)) --metrics-port $((B + 37)) --secure-serving=false >"$D/epp2.log" 2>&1 &
epp=$!; pids="$pids $epp"
for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:$((B + 37))/metrics && break; sleep 0.1; done
E2=http://127.0.0.1:$((B + 37))
printf '{"model":"%s","messages":[{"role":"user","content":"%s"}],"max_tokens":2}' $MODEL "$(text 7)" >"$D/chat.json"
$T/extproc_route 127.0.0.1:$((B + 35)) /v1/chat/completions "$D/chat.json" >/dev/null
printf '{"model":"%s","prompt":"%s","max_tokens":2}' $MODEL "$(text 8)" >"$D/body.json"
$T/extproc_route 127.0.0.1:$((B + 35)) /v1/completions "$D/body.json" >/dev/null
check "the EPP names its render server at start-up" "1" \
    "$(grep -c '"msg":"Prompt rendering".*"renderer":"http://127.0.0.3:'$RP'","timeoutMs":5000,"chatTimeoutMs":30000' "$D/epp2.log")"
check "a chat and a text prompt rendered by the render server" "2" \
    "$(metric $E2 'kvroute_tokenize_requests_total{endpoint="render"}')"
kill $rpid; wait $rpid 2>/dev/null
dest=$($T/extproc_route 127.0.0.1:$((B + 35)) /v1/completions "$D/body.json")
check "with the render server gone the request is still routed" "1" "$(echo "$dest" | grep -c "^127.0.0.[12]:$HP$")"
check "... and the failure is counted by reason" "1" "$(metric $E2 'kvroute_tokenize_failures_total{reason="transport"}')"
check "... and logged" "1" "$(grep -c '"msg":"Tokenization failed; routing without token ids".*"reason":"transport"' "$D/epp2.log")"
kill $epp; wait $epp 2>/dev/null
exit $fail
