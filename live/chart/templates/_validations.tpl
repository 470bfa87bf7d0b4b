{{/*
Render-time checks of values that would otherwise give a Deployment that starts and then
misroutes or crash-loops. The EPP config is read from the values (fromYaml) so the chart
can see what ./epp will see.
*/}}
{{- define "kvroute-epp.validate" -}}
{{- $ie := .Values.inferenceExtension -}}
{{- if not (hasKey $ie.pluginsCustomConfig $ie.pluginsConfigFile) -}}
{{- fail (printf "inferenceExtension.pluginsConfigFile %q is not a key of inferenceExtension.pluginsCustomConfig (keys: %s): ./epp would not find /config/%s" $ie.pluginsConfigFile (keys $ie.pluginsCustomConfig | sortAlpha | join ", ") $ie.pluginsConfigFile) -}}
{{- end -}}
{{- $cfg := index $ie.pluginsCustomConfig $ie.pluginsConfigFile | fromYaml -}}
{{- if hasKey $cfg "Error" -}}
{{- fail (printf "inferenceExtension.pluginsCustomConfig[%q] is not YAML: %s" $ie.pluginsConfigFile $cfg.Error) -}}
{{- end -}}
{{- range $cfg.plugins -}}
{{- if eq (toString .type) "precise-prefix-cache-scorer" -}}
{{- $kv := dig "parameters" "kvEventsConfig" dict . -}}
{{- if not (dig "discoverPods" false $kv) -}}
{{- /* centralised mode: every vLLM pod connects to the Service's ZMQ port */ -}}
{{- if gt (int $ie.replicas) 1 -}}
{{- fail (printf "inferenceExtension.replicas is %d but kvEventsConfig.discoverPods is false: vLLM pods publish KV events to one ZMQ address (the Service), so each replica would index only the pods that happened to connect to it. Use replicas: 1, or discoverPods: true (every replica subscribes to every pod)" (int $ie.replicas)) -}}
{{- end -}}
{{- $zport := regexFind "[0-9]+$" (dig "zmqEndpoint" "tcp://*:5557" $kv) -}}
{{- if ne $zport (toString $ie.zmqPort) -}}
{{- fail (printf "inferenceExtension.zmqPort is %v but kvEventsConfig.zmqEndpoint %q binds port %s: the Service would forward KV events to a closed port" $ie.zmqPort (dig "zmqEndpoint" "tcp://*:5557" $kv) (default "(none)" $zport)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $name, $_ := include "kvroute-epp.flagMap" . | fromYaml -}}
{{- if has $name (list "config-file" "pool-name" "pool-namespace" "pool-group" "endpoint-selector" "endpoint-target-ports" "grpc-port" "grpc-health-port" "metrics-port" "zap-encoder") -}}
{{- fail (printf "inferenceExtension.flags sets --%s, which the chart sets itself (from extProcPort, healthPort, metricsPort, pluginsConfigFile, the release or kvroute.endpointSelector): set that value instead, so ports, probes and Service agree" $name) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.kvroute.endpointSelector (not .Values.inferencePool.targetPorts) -}}
{{- fail "kvroute.endpointSelector needs inferencePool.targetPorts (the model servers' ports)" -}}
{{- end -}}
{{- end -}}
