{{/* Names, labels, the workers' environment and the checks shared by the templates. */}}

{{- define "stream-app.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's resource name: <release>-stream-app, or the release name if it says so. */}}
{{- define "stream-app.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "stream-app.headless" -}}
{{- printf "%s-headless" (include "stream-app.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "stream-app.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stream-app.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "stream-app.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{ include "stream-app.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "stream-app.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The Secret with the SASL password: an existing one, or the chart's. */}}
{{- define "stream-app.saslSecret" -}}
{{- .Values.kafka.security.sasl.existingSecret | default (printf "%s-kafka" (include "stream-app.fullname" .)) -}}
{{- end -}}

{{/* The Secret with the console's token: an existing one, or the chart's. */}}
{{- define "stream-app.consoleSecret" -}}
{{- .Values.console.existingSecret | default (printf "%s-console" (include "stream-app.fullname" .)) -}}
{{- end -}}

{{/* Whether the console has a token (given in values or in an existing Secret). */}}
{{- define "stream-app.consoleToken" -}}
{{- $console := .Values.console -}}
{{- if and $console.enabled (or $console.token $console.existingSecret) }}true{{ end -}}
{{- end -}}

{{- define "stream-app.tlsSecret" -}}
{{- .Values.kafka.security.tls.existingSecret | default (printf "%s-kafka-tls" (include "stream-app.fullname" .)) -}}
{{- end -}}

{{- define "stream-app.sasl" -}}
{{- if has .Values.kafka.security.protocol (list "SASL_PLAINTEXT" "SASL_SSL") }}true{{ end -}}
{{- end -}}

{{- define "stream-app.tls" -}}
{{- if has .Values.kafka.security.protocol (list "SSL" "SASL_SSL") }}true{{ end -}}
{{- end -}}

{{/* Where the TLS files are mounted in the pods. */}}
{{- define "stream-app.tlsDir" -}}/etc/stream-app/tls{{- end -}}

{{/*
Refuses values that cannot work, at render time (helm install, upgrade and template):
a worker beyond the partition count would own no partition; a setting in `settings` that the
chart also sets would be set twice; a SASL or TLS protocol without credentials or a CA would
only fail once the pods start. (values.schema.json checks the types and the enumerations.)
*/}}
{{- define "stream-app.validate" -}}
{{- if gt (int .Values.replicas) (int .Values.partitions) -}}
{{- fail (printf "replicas (%d) must not exceed partitions (%d): a worker beyond the partition count owns no partition; raise partitions (topics apply adds them) or lower replicas" (int .Values.replicas) (int .Values.partitions)) -}}
{{- end -}}
{{- $managed := list "APP_ID" "BOOTSTRAP_SERVERS" "PARTITIONS" "REPLICATION_FACTOR" "MIN_INSYNC_REPLICAS" "PROCESSING_GUARANTEE" "STANDBY_REPLICAS" "GROUP_INSTANCE_ID" "DATA_DIR" "WEB_HOST" "WEB_PORT" "WEB_ADVERTISED_HOST" "SECURITY_PROTOCOL" "SASL_MECHANISM" "SASL_USERNAME" "SASL_PASSWORD" "SSL_CA_LOCATION" "SSL_CERTIFICATE_LOCATION" "SSL_KEY_LOCATION" "CONSOLE" "CONSOLE_ACTIONS" "CONSOLE_TOKEN" -}}
{{- range $name, $value := .Values.settings -}}
{{- if has (upper $name) $managed -}}
{{- fail (printf "settings.%s: STREAM_APP_%s is set by the chart from its own value (see values.yaml); set that instead" $name (upper $name)) -}}
{{- end -}}
{{- end -}}
{{- if include "stream-app.sasl" . -}}
{{- $sasl := .Values.kafka.security.sasl -}}
{{- if not $sasl.username -}}
{{- fail (printf "kafka.security.protocol %s needs kafka.security.sasl.username" .Values.kafka.security.protocol) -}}
{{- end -}}
{{- if not (or $sasl.password $sasl.existingSecret) -}}
{{- fail "kafka.security.sasl needs a password or an existingSecret holding it" -}}
{{- end -}}
{{- end -}}
{{- if include "stream-app.tls" . -}}
{{- $tls := .Values.kafka.security.tls -}}
{{- if not (or $tls.ca $tls.existingSecret) -}}
{{- fail (printf "kafka.security.protocol %s needs kafka.security.tls.ca or an existingSecret with ca.crt" .Values.kafka.security.protocol) -}}
{{- end -}}
{{- if ne (not $tls.certificate) (not $tls.key) -}}
{{- fail "kafka.security.tls.certificate and kafka.security.tls.key go together (mutual TLS)" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Whether mutual TLS (a client certificate) is configured. */}}
{{- define "stream-app.mtls" -}}
{{- $tls := .Values.kafka.security.tls -}}
{{- if and (include "stream-app.tls" .) (or $tls.certificate $tls.mutual) }}true{{ end -}}
{{- end -}}

{{/* The STREAM_APP_* settings of every container (workers and the topics Job). */}}
{{- define "stream-app.env" -}}
- name: STREAM_APP_APP_ID
  value: {{ .Values.appId | quote }}
- name: STREAM_APP_BOOTSTRAP_SERVERS
  value: {{ .Values.kafka.bootstrapServers | quote }}
- name: STREAM_APP_PARTITIONS
  value: {{ .Values.partitions | quote }}
- name: STREAM_APP_REPLICATION_FACTOR
  value: {{ .Values.kafka.replicationFactor | quote }}
{{- if .Values.kafka.minInsyncReplicas }}
- name: STREAM_APP_MIN_INSYNC_REPLICAS
  value: {{ .Values.kafka.minInsyncReplicas | quote }}
{{- end }}
- name: STREAM_APP_PROCESSING_GUARANTEE
  value: {{ .Values.processingGuarantee | quote }}
- name: STREAM_APP_STANDBY_REPLICAS
  value: {{ .Values.standbyReplicas | quote }}
- name: STREAM_APP_SECURITY_PROTOCOL
  value: {{ .Values.kafka.security.protocol | quote }}
{{- if include "stream-app.sasl" . }}
- name: STREAM_APP_SASL_MECHANISM
  value: {{ .Values.kafka.security.sasl.mechanism | quote }}
- name: STREAM_APP_SASL_USERNAME
  value: {{ .Values.kafka.security.sasl.username | quote }}
- name: STREAM_APP_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "stream-app.saslSecret" . }}
      key: {{ .Values.kafka.security.sasl.passwordKey }}
{{- end }}
{{- if include "stream-app.tls" . }}
- name: STREAM_APP_SSL_CA_LOCATION
  value: {{ include "stream-app.tlsDir" . }}/ca.crt
{{- if include "stream-app.mtls" . }}
- name: STREAM_APP_SSL_CERTIFICATE_LOCATION
  value: {{ include "stream-app.tlsDir" . }}/tls.crt
- name: STREAM_APP_SSL_KEY_LOCATION
  value: {{ include "stream-app.tlsDir" . }}/tls.key
{{- end }}
{{- end }}
{{- range $name, $value := .Values.settings }}
- name: {{ printf "STREAM_APP_%s" (upper $name) }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* The console's settings, for the workers only (the topics Job serves no console). */}}
{{- define "stream-app.consoleEnv" -}}
- name: STREAM_APP_CONSOLE
  value: {{ .Values.console.enabled | quote }}
- name: STREAM_APP_CONSOLE_ACTIONS
  value: {{ .Values.console.actions | quote }}
{{- if include "stream-app.consoleToken" . }}
- name: STREAM_APP_CONSOLE_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "stream-app.consoleSecret" . }}
      key: {{ .Values.console.tokenKey }}
{{- end }}
{{- end -}}

{{/* The volume of the TLS files, for pods that connect to a TLS listener. */}}
{{- define "stream-app.tlsVolume" -}}
{{- if include "stream-app.tls" . -}}
- name: kafka-tls
  secret:
    secretName: {{ include "stream-app.tlsSecret" . }}
{{- end -}}
{{- end -}}

{{- define "stream-app.tlsMount" -}}
{{- if include "stream-app.tls" . -}}
- name: kafka-tls
  mountPath: {{ include "stream-app.tlsDir" . }}
  readOnly: true
{{- end -}}
{{- end -}}
