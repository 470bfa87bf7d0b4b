#!/bin/sh
# it_epp_startup: ./epp fails fast with one precise message (bad config with its
# file:line:col, bad flag, missing certificate, busy gRPC/metrics/ZMQ port), starts on
# free ports in TLS and plaintext mode with KV-event ingestion, and exits 0 on SIGTERM
# and SIGINT after a clean shutdown.
# Run from the repository root after `make epp`.
set -u
EPP=./epp
CFG=policies/presets/llm-d-precise.yaml
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
check() { # name, expected exit, expected text, command...
    name=$1 want=$2 text=$3; shift 3
    "$@" >"$T/out" 2>&1; rc=$?
    if [ "$rc" -ne "$want" ] || ! grep -qF -- "$text" "$T/out"; then
        echo "FAIL $name: exit $rc (want $want), output:"; sed 's/^/    /' "$T/out"; fails=$((fails + 1))
    else
        echo "ok   $name"
    fi
}
printf 'plugins:\n- type: queue-scorer\n  bogus: 1\n' >"$T/bad.yaml"
check bad-config 2 "bad.yaml:3:3: field 'plugins[0]': unknown field 'bogus'" \
    $EPP --config-file "$T/bad.yaml" --endpoints 127.0.0.1:8000
check missing-config 2 "$T/none.yaml" $EPP --config-file "$T/none.yaml" --endpoints 127.0.0.1:8000
check no-endpoints 2 "give --endpoints ip:port,..., --pool-name, --endpoint-selector or a file-discovery plugin" \
    $EPP --config-file $CFG
check two-sources 2 "are exclusive" $EPP --config-file $CFG --endpoints 127.0.0.1:8000 --pool-name p
check bad-endpoint 2 "'10.0.0.1' is not ip:port" $EPP --config-file $CFG --endpoints 10.0.0.1
check bad-flag 2 "unknown flag '--nope'" $EPP --config-file $CFG --endpoints 127.0.0.1:8000 --nope
check objectives-k8s 2 "--objectives is for --endpoints or file-discovery" $EPP --config-file $CFG --pool-name p --objectives a=1
check bad-objectives 2 "'a=x' is not name=priority" $EPP --config-file $CFG --endpoints 127.0.0.1:8000 --objectives a=x
check bad-sd-env 2 "SD_KV_CACHE_UTIL_THRESHOLD" env SD_KV_CACHE_UTIL_THRESHOLD=2 \
    $EPP --config-file $CFG --endpoints 127.0.0.1:8000
check bad-replay 2 "each pod binds its own replay socket" \
    $EPP --config-file $CFG --endpoints 127.0.0.1:8000 --kv-events-replay-endpoint tcp://10.0.0.1:5558
check bad-port 2 "flag --grpc-port: expected an integer" $EPP --config-file $CFG --endpoints a:1 --grpc-port x
check missing-cert 2 "tls: cannot open $T/tls.crt" $EPP --config-file $CFG --endpoints 127.0.0.1:8000 --cert-path "$T"
# file-discovery (dataLayer.discovery): the endpoints come from its file, no endpoint flag
printf 'plugins:\n- type: queue-scorer\n- type: file-discovery\n  parameters: {path: %s, watchFile: true}\ndataLayer:\n  discovery: {pluginRef: file-discovery}\n' \
    "$T/eps.yaml" >"$T/fd.yaml"
printf 'endpoints:\n- name: vllm-0\n  address: 127.0.0.1\n  port: "8000"\n- name: vllm-1\n  address: vllm-1.local\n  port: "8000"\n' \
    >"$T/eps.yaml"
check fd-bad-file 2 "eps.yaml:6:12: field 'endpoints[1].address': 'vllm-1.local' is not an IPv4 address" \
    $EPP --config-file "$T/fd.yaml"
check fd-and-flag 2 "dataLayer.discovery names plugin 'file-discovery' (file-discovery): drop --endpoints" \
    $EPP --config-file "$T/fd.yaml" --endpoints 127.0.0.1:8000
printf 'endpoints:\n- {name: vllm-0, address: 127.0.0.1, port: "8000"}\n- {name: vllm-1, address: 127.0.0.1, port: "8001"}\n' \
    >"$T/eps.yaml"
$EPP --config-file "$T/fd.yaml" --grpc-port 0 --grpc-health-port 0 --metrics-port 0 --secure-serving=false \
    2>"$T/fd.log" &
fdpid=$!
i=0
while ! grep -q "EPP started" "$T/fd.log" && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
kill -TERM $fdpid; wait $fdpid; fdrc=$?
if [ $fdrc -ne 0 ] || ! grep -q '"msg":"Endpoints from file".*"endpoints":2' "$T/fd.log" || ! grep -q "endpoints=2" "$T/fd.log"; then
    echo "FAIL fd-start: exit $fdrc, log:"; sed 's/^/    /' "$T/fd.log"; fails=$((fails + 1))
else
    echo "ok   fd-start"
fi
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=a -days 1 \
    -keyout "$T/other.key" -out "$T/tls.crt" >/dev/null 2>&1
openssl ecparam -name prime256v1 -genkey -noout -out "$T/tls.key" 2>/dev/null
check mismatched-key 2 "does not match the certificate" \
    $EPP --config-file $CFG --endpoints 127.0.0.1:8000 --cert-path "$T"

# start on free ports (ZMQ included), then second instances on the same ports must fail
sed 's|zmqEndpoint: "tcp://\*:5557"|zmqEndpoint: "tcp://127.0.0.1:*"|' $CFG >"$T/eph.yaml"
grep -q '127.0.0.1:\*' "$T/eph.yaml" || { echo "FAIL: could not rewrite the preset's zmqEndpoint"; exit 1; }
start() { # log file, extra flags...
    log=$1; shift
    $EPP --config-file "$T/eph.yaml" --endpoints 127.0.0.1:8000,127.0.0.1:8001 --grpc-port 0 --grpc-health-port 0 \
        --metrics-port 0 "$@" 2>"$log" &
    pid=$!
    i=0
    while ! grep -q "EPP started" "$log" && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
}
start "$T/a.log"
A=$pid
port=$(sed -n 's/.*grpc=\([0-9]*\).*/\1/p' "$T/a.log")
mport=$(sed -n 's/.*metrics=\([0-9]*\).*/\1/p' "$T/a.log")
zmq=$(sed -n 's/.*"zmqEndpoint":"\([^"]*\)".*/\1/p' "$T/a.log")
if [ -z "$port" ] || [ -z "$mport" ] || [ -z "$zmq" ]; then
    echo "FAIL start: ports missing from the log"; cat "$T/a.log"; fails=$((fails + 1))
fi
check busy-port 2 "cannot listen on 0.0.0.0:$port" \
    $EPP --config-file "$T/eph.yaml" --endpoints 127.0.0.1:8000 --grpc-port "$port" --grpc-health-port 0 --metrics-port 0
check busy-metrics 2 "$mport" \
    $EPP --config-file "$T/eph.yaml" --endpoints 127.0.0.1:8000 --grpc-port 0 --grpc-health-port 0 --metrics-port "$mport"
sed "s|zmqEndpoint: \"tcp://127.0.0.1:\\*\"|zmqEndpoint: \"$zmq\"|" "$T/eph.yaml" >"$T/busy.yaml"
check busy-zmq 2 "cannot bind kvEventsConfig.zmqEndpoint '$zmq'" \
    $EPP --config-file "$T/busy.yaml" --endpoints 127.0.0.1:8000 --grpc-port 0 --grpc-health-port 0 --metrics-port 0
kill -TERM $A; wait $A; rc=$?
if [ $rc -eq 0 ] && grep -q '"msg":"EPP stopped"' "$T/a.log" && grep -q '"signal":"SIGTERM"' "$T/a.log"; then
    echo "ok   sigterm"
else
    echo "FAIL sigterm: exit $rc"; cat "$T/a.log"; fails=$((fails + 1))
fi
start "$T/b.log" --secure-serving=false -v 4
B=$pid
if grep -q 'tls=off endpoints=2' "$T/b.log"; then echo "ok   plaintext"; else echo "FAIL plaintext"; fails=$((fails + 1)); fi
kill -INT $B; wait $B; rc=$?
if [ $rc -eq 0 ] && grep -q '"signal":"SIGINT"' "$T/b.log"; then echo "ok   sigint"; else
    echo "FAIL sigint: exit $rc"; cat "$T/b.log"; fails=$((fails + 1)); fi
# llm-d's current guide configs start unchanged; the precise producer's index is fed
for g in guide-precise-prefix-cache-routing guide-optimized-baseline; do
    $EPP --config-file tests/data/llm-d-router/$g.yaml --endpoints 127.0.0.1:8000 --grpc-port 0 --grpc-health-port 0 \
        --metrics-port 0 2>"$T/$g.log" &
    pid=$!
    i=0
    while ! grep -q "EPP started" "$T/$g.log" && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
    kill -TERM $pid; wait $pid; rc=$?
    if [ $rc -eq 0 ] && grep -q "EPP started" "$T/$g.log"; then echo "ok   $g starts"; else
        echo "FAIL $g: exit $rc"; cat "$T/$g.log"; fails=$((fails + 1)); fi
done
if grep -q '"msg":"KV-event ingestion started".*"discoverPods":true' "$T/guide-precise-prefix-cache-routing.log"; then
    echo "ok   the precise producer's index is fed"; else
    echo "FAIL no ingestion for the precise producer"; fails=$((fails + 1)); fi
[ $fails -eq 0 ]
