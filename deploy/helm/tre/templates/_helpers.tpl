{{- define "tre.labels" -}}
app.kubernetes.io/part-of: tre
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "tre.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}
