#!/bin/sh
# it_chart: the Helm chart in live/chart, rendered by a real helm (v3.6.2, fetched once by
# tests/tools/helm.sh into build/tools/), and the image recipe in live/Dockerfile.
#   1. `helm lint --strict` with the default values and every value set below;
#   2. `helm template` of each value set (default; HA with 3 replicas in discoverPods mode;
#      an endpoint selector instead of the pool; plaintext ext-proc with GIE's list-form
#      flags and its own config file; Prometheus ServiceMonitor; a v1alpha2 pool with a
#      release named 42; a flag value of 1000000), checked by tests/tools/chart_check.py on
#      the manifests as JSON (tests/tools/yaml2json.c, libyaml): names, strategy, grace
#      period, args, ports, probes, env, /config mount, Service, Role, InferencePool;
#   3. values the chart must refuse, each with its message (config file not in the
#      ConfigMap, zmqPort != the config's zmqEndpoint, replicas > 1 in centralised ZMQ
#      mode, a flag that overrides a chart-owned port);
#   4. ./epp with each rendered Deployment's args and ConfigMap:
#      a. exactly the rendered args (config path -> the rendered file copied here) plus
#         --kubeconfig naming a fake API server (build/rel/tests/bin/tools/fake_k8s_server)
#         that serves the pool (or, in selector mode, just pods) with two Ready pods: it
#         discovers them (endpoints = pods x target ports), starts ("EPP started") and
#         exits 0 on SIGTERM. The chart's fixed ports (9002, 9003, 9090, ZMQ 5557) are
#         kept by running in a network namespace of its own (unshare -n, as root); where
#         that is refused, the ports are set to 0 and ZMQ to loopback, and it says so;
#      b. the rendered args with the pool/selector flags replaced by --endpoints, ports 0
#         and the config's ZMQ bind address on loopback port 0: it starts ("EPP started")
#         and exits 0 on SIGTERM;
#   5. live/Dockerfile: its make targets exist, every COPY source exists or is built by
#      them, its build packages cover the Makefile's, and its runtime packages own every
#      shared library ./epp and ./kvctl need (dpkg -S; said when skipped).
# Run from the repository root after `make test-build`. Needs npm once (or HELM=/path/to/helm).
set -u
C=${CHART:-live/chart}
EPP=./epp
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL $*"; fails=$((fails + 1)); }

HELM=$(sh tests/tools/helm.sh) || { echo "FAIL it_chart: no helm (see the message above)"; exit 1; }
mkdir -p build/tools
Y=build/tools/yaml2json
if [ ! -x $Y ] || [ tests/tools/yaml2json.c -nt $Y ]; then
    cc -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -O1 -o $Y tests/tools/yaml2json.c \
        $(pkg-config --cflags --libs yaml-0.1 jansson) || { echo "FAIL it_chart: cannot build $Y"; exit 1; }
fi

# ---- value sets ------------------------------------------------------------------------------
# A config in discoverPods mode (each replica subscribes to every pod: HA is sound).
cat >"$T/ha.yaml" <<'EOF'
inferenceExtension:
  replicas: 3
  pluginsCustomConfig:
    custom-plugins.yaml: |
      apiVersion: inference.networking.x-k8s.io/v1alpha1
      kind: EndpointPickerConfig
      plugins:
      - type: precise-prefix-cache-scorer
        parameters:
          tokenProcessorConfig: {blockSize: 64}
          indexerConfig: {tokenizersPoolConfig: {modelName: Qwen/Qwen3-32B}}
          kvEventsConfig: {topicFilter: "kv@", discoverPods: true, socketPort: 5557}
      - type: queue-scorer
      - type: max-score-picker
      schedulingProfiles:
      - name: default
        plugins:
        - {pluginRef: precise-prefix-cache-scorer, weight: 3}
        - {pluginRef: queue-scorer, weight: 2}
        - {pluginRef: max-score-picker}
EOF
cat >"$T/selector.yaml" <<'EOF'
kvroute:
  endpointSelector: {tier: 1, app: vllm}
inferencePool:
  targetPorts: [{number: 8000}, {number: 8001}]
EOF
cat >"$T/plain.yaml" <<'EOF'
inferenceExtension:
  flags:
  - {name: secure-serving, value: false}
  - {name: v, value: 4}
  - {name: tokenize-timeout-ms, value: 600000}
  pluginsConfigFile: plain.yaml
  pluginsCustomConfig:
    plain.yaml: |
      plugins:
      - type: queue-scorer
      - type: max-score-picker
      schedulingProfiles:
      - name: default
        plugins: [{pluginRef: queue-scorer}, {pluginRef: max-score-picker}]
EOF
cat >"$T/monitoring.yaml" <<'EOF'
inferenceExtension:
  monitoring:
    prometheus: {enabled: true, interval: 15s, extraLabels: {release: prom}}
EOF
cat >"$T/alpha2.yaml" <<'EOF'
inferencePool:
  apiVersion: inference.networking.x-k8s.io/v1alpha2
EOF
cat >"$T/bignum.yaml" <<'EOF'
inferenceExtension:
  flags: {tokenize-timeout-ms: 1000000}
EOF
: >"$T/default.yaml"

out=$($HELM lint --strict $C 2>&1) || fail "helm lint --strict: $out"
NS=llm-d
# case, release; bignum is rendered only (./epp caps --tokenize-timeout-ms at 600000)
for spec in default:gaie ha:gaie selector:gaie plain:gaie monitoring:gaie alpha2:42 bignum:gaie; do
    case=${spec%%:*} rel=${spec#*:}
    D=$T/$case
    mkdir -p "$D"
    out=$($HELM lint --strict $C -f "$T/$case.yaml" 2>&1) || fail "helm lint --strict ($case): $out"
    if ! $HELM template "$rel" $C --namespace $NS -f "$T/$case.yaml" >"$D/render.yaml" 2>"$D/err"; then
        fail "helm template ($case): $(cat "$D/err")"
        continue
    fi
    $Y "$D/render.yaml" >"$D/render.json" || { fail "$case: the render is not YAML"; continue; }
    python3 tests/tools/chart_check.py "$D/render.json" "$rel" $NS "$case" "$D" || fails=$((fails + 1))
done
grep -q '"1000000"' "$T/bignum/render.yaml" || fail "bignum: a flag of 1000000 does not render as \"1000000\""

# ---- values the chart refuses ---------------------------------------------------------------------
refuse() { # name, expected text, helm --set args...
    name=$1 text=$2; shift 2
    if $HELM template gaie $C --namespace $NS "$@" >/dev/null 2>"$T/err"; then
        fail "refuse-$name: rendered"
    elif ! grep -qF -- "$text" "$T/err"; then
        fail "refuse-$name: message lacks '$text': $(cat "$T/err")"
    fi
}
refuse config-file 'pluginsConfigFile "x.yaml" is not a key' --set inferenceExtension.pluginsConfigFile=x.yaml
refuse zmq-port 'zmqPort is 5556 but kvEventsConfig.zmqEndpoint' --set inferenceExtension.zmqPort=5556
refuse ha-centralised 'replicas is 2 but kvEventsConfig.discoverPods is false' --set inferenceExtension.replicas=2
refuse owned-flag 'flags sets --grpc-port' --set inferenceExtension.flags.grpc-port=1
refuse selector-ports 'kvroute.endpointSelector needs inferencePool.targetPorts' \
    --set kvroute.endpointSelector.app=vllm --set inferencePool.targetPorts=null

# ---- ./epp on the rendered args and config ------------------------------------------------------
FK=build/rel/tests/bin/tools/fake_k8s_server
# One run of 4a, in whatever network namespace it is started in: the fake API server,
# a kubeconfig for it, ./epp with the given args until "EPP started", then SIGTERM.
# Args: dir, pool name ("-" in selector mode), target ports, then ./epp's arguments.
cat >"$T/run_a.sh" <<'EOF'
D=$1 pool=$2 ports=$3; shift 3
[ "${NETNS:-}" = 1 ] && { ip link set lo up || exit 3; }
$FK s3cret llm-d "$pool" llm-d.ai/inference-serving=true "$ports" \
    llm-d.ai/inference-serving=true,app=vllm,tier=1 2 >"$D/fk.out" 2>&1 &
fk=$!
i=0
while ! grep -q '^port ' "$D/fk.out" && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
cat >"$D/kubeconfig" <<EOK
apiVersion: v1
kind: Config
current-context: fake
clusters:
- name: fake
  cluster: {server: "http://127.0.0.1:$(sed -n 's/^port //p' "$D/fk.out")"}
contexts:
- name: fake
  context: {cluster: fake, user: test}
users:
- name: test
  user: {token: s3cret}
EOK
env -u KUBERNETES_SERVICE_HOST -u KUBERNETES_SERVICE_PORT $EPP "$@" --kubeconfig "$D/kubeconfig" 2>"$D/a.log" &
pid=$!
i=0
while ! grep -q '"EPP started"' "$D/a.log" && kill -0 $pid 2>/dev/null && [ $i -lt 200 ]; do
    sleep 0.05; i=$((i + 1))
done
kill -TERM $pid 2>/dev/null
wait $pid; rc=$?
kill -TERM $fk; wait $fk
exit $rc
EOF
if unshare -n true 2>/dev/null && command -v ip >/dev/null; then netns=1; else netns=0; fi
if [ ! -x $EPP ] || [ ! -x $FK ]; then
    fail "$EPP or $FK is not built (make test-build)"
else
    for case in default ha selector plain monitoring alpha2; do
        D=$T/$case
        [ -f "$D/args" ] || continue
        # the rendered config, with a centralised ZMQ bind on a free loopback port
        for f in "$D"/config/*; do
            sed 's|tcp://\*:5557|tcp://127.0.0.1:*|' "$f" >"$f.run"
        done
        # a. exactly the rendered args, discovering through a kubeconfig
        set --
        pool=- ports=8000 prev=
        while IFS= read -r a; do
            case $prev in
            --pool-name) pool=$a ;;
            --endpoint-target-ports) ports=$a ;;
            --grpc-port | --grpc-health-port | --metrics-port) [ $netns = 1 ] || a=0 ;;
            esac
            case $a in /config/*) a=$D/config/${a#/config/}; [ $netns = 1 ] || a=$a.run ;; esac
            prev=$a
            set -- "$@" "$a"
        done <"$D/args"
        prev=
        want=$((2 * ($(echo "$ports" | tr -cd , | wc -c) + 1)))
        if [ $netns = 1 ]; then
            NETNS=1 FK=$FK EPP=$EPP unshare -n sh "$T/run_a.sh" "$D" "$pool" "$ports" "$@"
        else
            FK=$FK EPP=$EPP sh "$T/run_a.sh" "$D" "$pool" "$ports" "$@"
        fi
        rc=$?
        if ! grep -q '"EPP started"' "$D/a.log" || ! grep -q "endpoints=$want\"" "$D/a.log" || [ $rc -ne 0 ]; then
            fail "epp-args-$case: exit $rc, expected a start with $want endpoints via --kubeconfig: $(tail -5 "$D/a.log")"
        fi
        # b. the same with static endpoints and free ports: starts, then exits 0 on SIGTERM
        set --
        skip=0
        while IFS= read -r a; do
            if [ $skip = 1 ]; then skip=0; continue; fi
            case $a in
            --pool-name | --pool-namespace | --pool-group | --endpoint-selector | --endpoint-target-ports)
                skip=1; continue ;;
            /config/*) a=$D/config/${a#/config/}.run ;;
            esac
            case ${prev:-} in --grpc-port | --grpc-health-port | --metrics-port) a=0 ;; esac
            prev=$a
            set -- "$@" "$a"
        done <"$D/args"
        prev=
        $EPP "$@" --endpoints 127.0.0.1:1,127.0.0.1:2 2>"$D/b.log" &
        pid=$!
        i=0
        while ! grep -q '"EPP started"' "$D/b.log" && kill -0 $pid 2>/dev/null && [ $i -lt 200 ]; do
            sleep 0.05; i=$((i + 1))
        done
        if ! grep -q '"EPP started"' "$D/b.log"; then
            fail "epp-run-$case: did not start: $(tail -5 "$D/b.log")"
            kill $pid 2>/dev/null; wait $pid 2>/dev/null
            continue
        fi
        tls=self-signed; [ $case = plain ] && tls=off
        grep -q "tls=$tls endpoints=2" "$D/b.log" || fail "epp-run-$case: expected tls=$tls: $(grep started "$D/b.log")"
        kill -TERM $pid
        wait $pid; rc=$?
        [ $rc -eq 0 ] && grep -q '"EPP stopped"' "$D/b.log" || fail "epp-run-$case: exit $rc after SIGTERM: $(tail -3 "$D/b.log")"
    done
fi

# ---- live/Dockerfile ---------------------------------------------------------------------------
DF=live/Dockerfile
targets=$(sed -n 's/^RUN make clean && make -j"$(nproc)" //p' $DF)
[ -n "$targets" ] || fail "Dockerfile: no 'make ... TARGETS' line found"
make -n $targets >/dev/null 2>&1 || fail "Dockerfile: make has no rule for: $targets"
for src in $(sed -n 's/^COPY --from=build \(.*\) [^ ]*$/\1/p' $DF); do
    p=${src#/src/}
    [ -e "$p" ] || echo " $targets " | grep -q " $p " || fail "Dockerfile: COPY $src is neither in the repository nor a make target"
done
entry=$(sed -n 's/^ENTRYPOINT \["\([^"]*\)".*/\1/p' $DF)
grep -q "^COPY --from=build .*/$(basename "$entry") .*$(dirname "$entry")/\$" $DF || fail "Dockerfile: ENTRYPOINT $entry is not copied"
stage() { # Nth "apt-get install" list of the Dockerfile
    awk -v n="$1" '/apt-get install/ { k++ } k == n { print } /rm -rf/ && k == n { exit }' $DF |
        tr ' \\' '\n\n' | grep -E '^[a-z0-9][a-z0-9.+-]+$' | grep -vE '^(apt-get|install|rm|RUN|update|-y)$'
}
build_pkgs=$(stage 1) run_pkgs=$(stage 2)
deb=$(make -s -p -n 2>/dev/null | sed -n 's/^DEB_PKGS := //p' | head -1)
for p in $deb; do
    case $p in libcmocka-dev | gnuplot-nox | sqlite3 | openssl | clang | libxml2-utils | chromium) continue ;; esac   # tests, demo, fuzzing only
    echo "$build_pkgs" | grep -qx "$p" || fail "Dockerfile: build stage lacks $p (Makefile DEB_PKGS)"
done
if command -v dpkg >/dev/null && [ -x ./kvctl ]; then
    for lib in $(objdump -p $EPP ./kvctl | awk '/NEEDED/ { print $2 }' | sort -u); do
        path=$(ldconfig -p | awk -v l="$lib" '$1 == l { print $NF; exit }')
        owner=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -1 | cut -d: -f1)
        case $owner in libc6 | libgcc-s1 | "") continue ;; esac       # in the base image
        echo "$run_pkgs" | grep -qx "$owner" || fail "Dockerfile: runtime stage lacks $owner ($lib)"
    done
else
    echo "skip Dockerfile runtime libraries: dpkg or ./kvctl missing"
fi

[ $netns = 1 ] && exact="rendered ports in a network namespace" || exact="no network namespace: ports 0"
[ $fails -eq 0 ] && echo "it_chart: ok (helm $($HELM version --short); 7 value sets rendered and checked, 5 refused, 6 run by ./epp with --kubeconfig against a fake API server ($exact) and with --endpoints)"
[ $fails -eq 0 ]
