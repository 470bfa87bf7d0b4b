{{/* Names shared by every template. */}}
{{- define "kvroute-epp.name" -}}
{{- printf "%s-epp" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kvroute-epp.labels" -}}
app.kubernetes.io/name: kvroute-epp
app.kubernetes.io/instance: {{ .Release.Name }}
inferencepool: {{ include "kvroute-epp.name" . }}
{{- end -}}

{{- define "kvroute-epp.selectorLabels" -}}
inferencepool: {{ include "kvroute-epp.name" . }}
{{- end -}}
