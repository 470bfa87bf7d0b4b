#!/bin/sh
# it_chart: consistency of the Helm chart in live/chart without helm (not installable
# here, so the templates are never rendered):
#   1. Chart.yaml and values.yaml parse as YAML, and the default EndpointPickerConfig in
#      values.yaml parses too (python3's yaml module when present; said when skipped);
#   2. every .Values.<path> a template references exists in values.yaml (key paths read
#      from values.yaml by indentation -- grep level, not a YAML parser);
#   3. the ports and names the EPP and llm-d users rely on are there.
# Run from the repository root.
set -u
C=${CHART:-live/chart}
fails=0
fail() { echo "FAIL $*"; fails=$((fails + 1)); }

# 1. YAML syntax.
if python3 -c 'import yaml' 2>/dev/null; then
    for f in $C/Chart.yaml $C/values.yaml; do
        python3 -c 'import sys, yaml; yaml.safe_load(open(sys.argv[1]))' "$f" 2>/dev/null || fail "$f does not parse"
    done
    python3 - "$C/values.yaml" <<'PY' || fail "default pluginsCustomConfig is not a valid EndpointPickerConfig body"
import sys, yaml
v = yaml.safe_load(open(sys.argv[1]))
ie = v["inferenceExtension"]
cfg = yaml.safe_load(ie["pluginsCustomConfig"][ie["pluginsConfigFile"]])
assert cfg["kind"] == "EndpointPickerConfig"
types = [p["type"] for p in cfg["plugins"]]
assert "precise-prefix-cache-scorer" in types, types
refs = [r["pluginRef"] for r in cfg["schedulingProfiles"][0]["plugins"]]
assert all(r in types for r in refs), refs
PY
else
    echo "skip YAML parse: python3 with the yaml module is not installed"
fi

# 2. Template value references against the key paths of values.yaml.
paths=$(awk '
    /^[ \t]*#/ || /^[ \t]*$/ { next }
    {
        match($0, /^ */); ind = RLENGTH
        if (block >= 0 && ind > block) next      # inside a block scalar
        block = -1
        line = substr($0, ind + 1)
        if (line ~ /^- /) next                    # list items: no deeper references
        if (!match(line, /^[A-Za-z0-9_.-]+:/)) next
        key = substr(line, 1, RLENGTH - 1)
        while (depth > 0 && ind <= indent[depth]) depth--
        depth++; indent[depth] = ind; name[depth] = key
        p = name[1]; for (i = 2; i <= depth; i++) p = p "." name[i]
        print p
        if (line ~ /[|>][-+]?[ \t]*$/) block = ind
    }
    BEGIN { block = -1; depth = 0 }' $C/values.yaml)
refs=$(grep -ho '\.Values\.[A-Za-z0-9_.]*' $C/templates/* | sed 's/^\.Values\.//; s/\.$//' | sort -u)
[ -n "$refs" ] || fail "no .Values references found in the templates"
for r in $refs; do
    echo "$paths" | grep -qx "$r" || fail "templates reference .Values.$r, which values.yaml does not define"
done

# 3. What users and the EPP rely on.
grep -q 'name: grpc-ext-proc' $C/templates/service.yaml || fail "service lacks grpc-ext-proc"
grep -q 'name: http-metrics' $C/templates/service.yaml || fail "service lacks http-metrics"
grep -q 'name: zmq' $C/templates/service.yaml || fail "service lacks the zmq port"
for v in 'extProcPort: 9002' 'healthPort: 9003' 'metricsPort: 9090' 'zmqPort: 5557'; do
    grep -q "$v" $C/values.yaml || fail "values.yaml lacks '$v'"
done
for a in -- --pool-name --pool-namespace --config-file; do
    [ "$a" = -- ] && continue
    grep -q -- "- $a\$" $C/templates/deployment.yaml || fail "deployment lacks $a"
done
grep -q 'resources: \["pods"\]' $C/templates/rbac.yaml || fail "role lacks pods"
grep -q 'verbs: \["get", "watch", "list"\]' $C/templates/rbac.yaml || fail "role verbs"
grep -q 'grpc:' $C/templates/deployment.yaml || fail "no gRPC probes"
grep -q 'endpointPickerRef:' $C/templates/inferencepool.yaml || fail "InferencePool lacks endpointPickerRef"

[ $fails -eq 0 ] && echo "it_chart: ok ($(echo "$refs" | wc -l) value references checked)"
[ $fails -eq 0 ]
