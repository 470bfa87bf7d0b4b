{{/* Names shared by every template. */}}
{{- define "kvroute-epp.name" -}}
{{- printf "%s-epp" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kvroute-epp.labels" -}}
app.kubernetes.io/name: kvroute-epp
app.kubernetes.io/instance: {{ .Release.Name | quote }}
inferencepool: {{ include "kvroute-epp.name" . }}
{{- end -}}

{{- define "kvroute-epp.selectorLabels" -}}
inferencepool: {{ include "kvroute-epp.name" . }}
{{- end -}}

{{/* The InferencePool API group, from inferencePool.apiVersion ("group/version"). */}}
{{- define "kvroute-epp.poolGroup" -}}
{{- (split "/" .Values.inferencePool.apiVersion)._0 -}}
{{- end -}}

{{/* More than one replica: GIE's HA probes (service names liveness/readiness). */}}
{{- define "kvroute-epp.ha" -}}
{{- if gt (int .Values.inferenceExtension.replicas) 1 }}true{{ end -}}
{{- end -}}

{{/* inferenceExtension.flags as one name -> value map (YAML): GIE's list form
("- name: v" / "  value: 4") or a map ("v: 4"). */}}
{{- define "kvroute-epp.flagMap" -}}
{{- $flags := .Values.inferenceExtension.flags | default dict -}}
{{- if kindIs "slice" $flags -}}
{{- $m := dict -}}
{{- range $flags }}{{ $_ := set $m (toString .name) .value }}{{ end -}}
{{- toYaml $m -}}
{{- else -}}
{{- toYaml $flags -}}
{{- end -}}
{{- end -}}

{{/* The flags as "--name" "value" arg pairs. Helm reads numbers in values files as
floats, which print as 1e+06: integral ones are printed as integers. */}}
{{- define "kvroute-epp.flagArgs" -}}
{{- $m := include "kvroute-epp.flagMap" . | fromYaml -}}
{{- range $name := keys $m | sortAlpha }}
{{- $v := index $m $name }}
{{- if kindIs "float64" $v }}{{ if eq $v (float64 (int64 $v)) }}{{ $v = int64 $v }}{{ end }}{{ end }}
- {{ printf "--%s" $name | quote }}
- {{ $v | toString | quote }}
{{- end -}}
{{- end -}}

{{/* kvroute.endpointSelector {k: v} as ./epp's "k=v,..." (sorted, so renders are stable). */}}
{{- define "kvroute-epp.selectorFlag" -}}
{{- $sel := . -}}
{{- $pairs := list -}}
{{- range $k := keys $sel | sortAlpha }}{{ $pairs = append $pairs (printf "%s=%v" $k (index $sel $k)) }}{{ end -}}
{{- join "," $pairs -}}
{{- end -}}

{{- define "kvroute-epp.targetPortsFlag" -}}
{{- $ports := list -}}
{{- range .Values.inferencePool.targetPorts }}{{ $ports = append $ports (toString .number) }}{{ end -}}
{{- join "," $ports -}}
{{- end -}}
