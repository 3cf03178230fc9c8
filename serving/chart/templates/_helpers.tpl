{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "yolo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name alone when it already contains the chart name. */}}
{{- define "yolo.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "yolo.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "yolo.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: inference
{{- end }}

{{- define "yolo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "yolo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "yolo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "yolo.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* True (non-empty) when the chart creates the Secret: no existing one and some value given. */}}
{{/* The secret values the chart knows, by their name under .Values.secret (and .keys). */}}
{{- define "yolo.secretFields" -}}
s3AccessKeyId s3SecretAccessKey apiKey mlflowUsername mlflowPassword
{{- end }}

{{- define "yolo.createSecret" -}}
{{- $s := .Values.secret }}
{{- $given := list }}
{{- range $k := splitList " " (include "yolo.secretFields" .) }}{{ if index $s $k }}{{ $given = append $given $k }}{{ end }}{{ end }}
{{- if and (not $s.existingSecret) $given }}true{{ end }}
{{- end }}

{{- define "yolo.secretName" -}}
{{- default (include "yolo.fullname" .) .Values.secret.existingSecret }}
{{- end }}

{{- define "yolo.device" -}}
{{- if .Values.server.device }}{{ .Values.server.device }}{{ else if .Values.gpu.enabled }}cuda{{ else }}cpu{{ end }}
{{- end }}
