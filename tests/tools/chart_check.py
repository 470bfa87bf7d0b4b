#!/usr/bin/env python3
"""chart_check: asserts what GIE's inferencepool chart guarantees (specs/epp.md section 6)
on one `helm template` render of live/chart, given as JSON by tests/tools/yaml2json.

usage: chart_check.py RENDER.json RELEASE NAMESPACE CASE OUTDIR
CASE names the value set tests/it_chart.sh rendered (default, ha, selector, plain,
monitoring, alpha2, bignum); the expectations that differ per case are below. Writes
OUTDIR/args (the container args, one per line) and OUTDIR/config/<file> (the ConfigMap's
files) for the ./epp run. Prints one line per failed property; exit 1 if any failed.
Standard library only."""
import json
import os
import sys

render, release, ns, case, outdir = sys.argv[1:6]
docs = json.load(open(render))
fails = []


def check(cond, what):
    if not cond:
        fails.append(what)
    return cond


def one(kind):
    objs = [d for d in docs if d.get("kind") == kind]
    check(len(objs) == 1, f"{kind}: {len(objs)} rendered, expected 1")
    return objs[0] if objs else {}


def flag(args, name):
    """Value after --name, or None; a flag given twice is a failure."""
    at = [i for i, a in enumerate(args) if a == "--" + name]
    check(len(at) <= 1, f"args: --{name} given {len(at)} times")
    return args[at[0] + 1] if at and at[0] + 1 < len(args) else None


epp = f"{release}-epp"
kinds = sorted(d.get("kind", "?") for d in docs)
for d in docs:
    md = d.get("metadata", {})
    check(md.get("namespace", ns) == ns, f"{d.get('kind')} {md.get('name')}: namespace {md.get('namespace')}")
    strs = [md.get("name")] + list(md.get("labels", {}).values())
    check(all(isinstance(v, str) for v in strs), f"{d.get('kind')}: name or label values not strings: {strs}")

# --- Deployment -------------------------------------------------------------------------
dep = one("Deployment")
spec = dep.get("spec", {})
pod = spec.get("template", {}).get("spec", {})
ha = case == "ha"
check(dep.get("metadata", {}).get("name") == epp, f"Deployment name {dep.get('metadata', {}).get('name')} != {epp}")
check(spec.get("replicas") == (3 if ha else 1), f"Deployment replicas {spec.get('replicas')}")
check(spec.get("strategy", {}).get("type") == "Recreate", f"strategy {spec.get('strategy')}")
check(pod.get("terminationGracePeriodSeconds") == 130, f"grace period {pod.get('terminationGracePeriodSeconds')}")
check(pod.get("serviceAccountName") == epp, f"serviceAccountName {pod.get('serviceAccountName')}")
sel = spec.get("selector", {}).get("matchLabels", {})
check(sel == {"inferencepool": epp}, f"Deployment selector {sel}")
plabels = spec.get("template", {}).get("metadata", {}).get("labels", {})
check(all(plabels.get(k) == v for k, v in sel.items()), f"pod labels {plabels} do not match the selector {sel}")
ctrs = pod.get("containers", [])
check(len(ctrs) == 1, f"{len(ctrs)} containers")
c = ctrs[0] if ctrs else {}
args = c.get("args", [])
bad = [a for a in args if not isinstance(a, str)]
check(not bad, f"args that are not strings (Kubernetes rejects them): {bad}")
args = [str(a) for a in args]

cfgfile = {"plain": "plain.yaml"}.get(case, "custom-plugins.yaml")
check(flag(args, "config-file") == f"/config/{cfgfile}", f"--config-file {flag(args, 'config-file')}")
check(flag(args, "zap-encoder") == "json", f"--zap-encoder {flag(args, 'zap-encoder')}")
if case == "selector":
    check(flag(args, "endpoint-selector") == "app=vllm,tier=1", f"--endpoint-selector {flag(args, 'endpoint-selector')}")
    check(flag(args, "endpoint-target-ports") == "8000,8001",
          f"--endpoint-target-ports {flag(args, 'endpoint-target-ports')}")
    check(flag(args, "pool-name") is None, "--pool-name given with an endpoint selector")
else:
    check(flag(args, "pool-name") == release, f"--pool-name {flag(args, 'pool-name')} != {release}")
    check(flag(args, "pool-namespace") == ns, f"--pool-namespace {flag(args, 'pool-namespace')} != {ns}")
    want_group = "inference.networking.x-k8s.io" if case == "alpha2" else None
    check(flag(args, "pool-group") == want_group, f"--pool-group {flag(args, 'pool-group')} != {want_group}")
check(flag(args, "grpc-port") == "9002", f"--grpc-port {flag(args, 'grpc-port')}")
check(flag(args, "grpc-health-port") == "9003", f"--grpc-health-port {flag(args, 'grpc-health-port')}")
check(flag(args, "metrics-port") == "9090", f"--metrics-port {flag(args, 'metrics-port')}")
check("--ha-enable-leader-election" not in args, "--ha-enable-leader-election: ./epp has no such flag")
want_flags = {"default": {"v": "1"}, "plain": {"secure-serving": "false", "v": "4", "tokenize-timeout-ms": "600000"},
              "bignum": {"tokenize-timeout-ms": "1000000"}}.get(case, {"v": "1"})
for k, v in want_flags.items():
    check(flag(args, k) == v, f"--{k} {flag(args, k)} != {v}")

ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
check(ports == {"grpc": 9002, "grpc-health": 9003, "metrics": 9090, "zmq": 5557}, f"container ports {ports}")
for probe, ha_service in (("livenessProbe", "liveness"), ("readinessProbe", "readiness")):
    g = c.get(probe, {}).get("grpc", {})
    want = ha_service if ha else "inference-extension"
    check(g == {"port": 9003, "service": want}, f"{probe} grpc {g}, expected port 9003 service {want}")
env = {e.get("name"): e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in c.get("env", [])}
check(env.get("NAMESPACE") == "metadata.namespace", f"env NAMESPACE {env.get('NAMESPACE')}")
check(env.get("POD_NAME") == "metadata.name", f"env POD_NAME {env.get('POD_NAME')}")
mounts = {m.get("name"): m.get("mountPath") for m in c.get("volumeMounts", [])}
vols = {v.get("name"): v.get("configMap", {}).get("name") for v in pod.get("volumes", [])}
cm_vol = [n for n, p in mounts.items() if p == "/config"]
check(len(cm_vol) == 1 and vols.get(cm_vol[0]) == epp, f"/config mount {mounts} volumes {vols}")

# --- ConfigMap: the file --config-file names, with a plausible EndpointPickerConfig -------
cm = one("ConfigMap")
check(cm.get("metadata", {}).get("name") == epp, f"ConfigMap name {cm.get('metadata', {}).get('name')}")
data = cm.get("data", {})
check(cfgfile in data, f"ConfigMap keys {sorted(data)} lack {cfgfile}")
os.makedirs(os.path.join(outdir, "config"), exist_ok=True)
for name, text in data.items():
    check(isinstance(text, str) and "schedulingProfiles" in text, f"ConfigMap {name}: not an EndpointPickerConfig")
    with open(os.path.join(outdir, "config", name), "w") as f:
        f.write(text)
with open(os.path.join(outdir, "args"), "w") as f:
    f.write("".join(a + "\n" for a in args))

# --- Service --------------------------------------------------------------------------------
svc = one("Service")
ss = svc.get("spec", {})
check(svc.get("metadata", {}).get("name") == epp, f"Service name {svc.get('metadata', {}).get('name')}")
check(ss.get("type") == "ClusterIP", f"Service type {ss.get('type')}")
check(ss.get("selector") == {"inferencepool": epp}, f"Service selector {ss.get('selector')}")
check(all(plabels.get(k) == v for k, v in ss.get("selector", {}).items()), "Service selector misses the pods")
sports = {p.get("name"): p.get("port") for p in ss.get("ports", [])}
check(sports == {"grpc-ext-proc": 9002, "http-metrics": 9090, "zmq": 5557}, f"Service ports {sports}")
by_port = {p: n for n, p in ports.items()}
for p in ss.get("ports", []):
    check(p.get("port") in by_port, f"Service port {p.get('name')} {p.get('port')}: no such container port")

# --- RBAC ----------------------------------------------------------------------------------------
role = one("Role")
rb = one("RoleBinding")
one("ServiceAccount")
granted = {}
for r in role.get("rules", []):
    for g in r.get("apiGroups", []):
        for res in r.get("resources", []):
            granted.setdefault((g, res), set()).update(r.get("verbs", []))
pool_group = "inference.networking.x-k8s.io" if case == "alpha2" else "inference.networking.k8s.io"
for g, res in ((pool_group, "inferencepools"), ("inference.networking.x-k8s.io", "inferenceobjectives"),
               ("inference.networking.x-k8s.io", "inferencemodelrewrites"), ("", "pods")):
    check(granted.get((g, res)) == {"get", "watch", "list"}, f"Role on {g or 'core'}/{res}: {granted.get((g, res))}")
check(rb.get("roleRef", {}).get("name") == role.get("metadata", {}).get("name"), "RoleBinding roleRef")
check(rb.get("subjects") == [{"kind": "ServiceAccount", "name": epp, "namespace": ns}],
      f"RoleBinding subjects {rb.get('subjects')}")

# --- InferencePool --------------------------------------------------------------------------
ip = one("InferencePool")
ips = ip.get("spec", {})
check(ip.get("metadata", {}).get("name") == release, f"InferencePool name {ip.get('metadata', {}).get('name')}")
if case == "alpha2":
    check(ip.get("apiVersion") == "inference.networking.x-k8s.io/v1alpha2", f"apiVersion {ip.get('apiVersion')}")
    check(ips.get("targetPortNumber") == 8000, f"targetPortNumber {ips.get('targetPortNumber')}")
    check(ips.get("selector") == {"llm-d.ai/inference-serving": "true"}, f"selector {ips.get('selector')}")
    check(ips.get("extensionRef") == {"name": epp, "portNumber": 9002}, f"extensionRef {ips.get('extensionRef')}")
else:
    check(ip.get("apiVersion") == "inference.networking.k8s.io/v1", f"apiVersion {ip.get('apiVersion')}")
    want_ports = [{"number": 8000}, {"number": 8001}] if case == "selector" else [{"number": 8000}]
    check(ips.get("targetPorts") == want_ports, f"targetPorts {ips.get('targetPorts')}")
    check(ips.get("selector") == {"matchLabels": {"llm-d.ai/inference-serving": "true"}},
          f"selector {ips.get('selector')}")
    check(ips.get("endpointPickerRef") == {"name": epp, "port": {"number": 9002}},
          f"endpointPickerRef {ips.get('endpointPickerRef')}")

# --- ServiceMonitor (monitoring on only) ---------------------------------------------------
mons = [d for d in docs if d.get("kind") == "ServiceMonitor"]
if case == "monitoring":
    m = mons[0] if check(len(mons) == 1, f"{len(mons)} ServiceMonitors") else {}
    ms = m.get("spec", {})
    eps = ms.get("endpoints", [])
    check([e.get("port") for e in eps] == ["http-metrics"], f"ServiceMonitor endpoints {eps}")
    check(all(e.get("interval") == "15s" and e.get("path") == "/metrics" for e in eps), f"endpoints {eps}")
    svc_labels = svc.get("metadata", {}).get("labels", {})
    msel = ms.get("selector", {}).get("matchLabels", {})
    check(msel and all(svc_labels.get(k) == v for k, v in msel.items()),
          f"ServiceMonitor selector {msel} misses the Service labels {svc_labels}")
    check(m.get("metadata", {}).get("labels", {}).get("release") == "prom", "ServiceMonitor extraLabels")
    check(ms.get("namespaceSelector") == {"matchNames": [ns]}, f"namespaceSelector {ms.get('namespaceSelector')}")
else:
    check(not mons, "ServiceMonitor rendered with monitoring off")

expected = ["ConfigMap", "Deployment", "InferencePool", "Role", "RoleBinding", "Service", "ServiceAccount"]
if case == "monitoring":
    expected.append("ServiceMonitor")
check(kinds == sorted(expected), f"rendered kinds {kinds}")

for f in fails:
    print(f"FAIL {case}: {f}")
sys.exit(1 if fails else 0)
