{{/* Chart name, truncated to 63 characters (a DNS label). */}}
{{- define "kstate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name of the release's objects. The StatefulSet's pods are named <fullname>-<ordinal>
and the headless Service <fullname>-headless, so keep it short: 52 characters leave room for both.
*/}}
{{- define "kstate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The headless Service: the pods' DNS names, used as their advertise addresses. */}}
{{- define "kstate.headlessName" -}}
{{- printf "%s-headless" (include "kstate.fullname" .) }}
{{- end }}

{{- define "kstate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "kstate.labels" -}}
helm.sh/chart: {{ include "kstate.chart" . }}
{{ include "kstate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kstate
{{- end }}

{{/* Labels that select the release's pods; never change them on an installed release. */}}
{{- define "kstate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kstate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kstate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kstate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The kstate app: consumer group <namespace>.<app>. Defaults to the release name. */}}
{{- define "kstate.app" -}}
{{- default .Release.Name .Values.kafka.app }}
{{- end }}

{{/*
Where the user function comes from: "sidecar", "address" or "example", in that order of
precedence. Fails when none is configured, or when both a sidecar and an address are.
*/}}
{{- define "kstate.userFunctionMode" -}}
{{- $uf := .Values.userFunction }}
{{- if and $uf.sidecar.enabled $uf.address }}
{{- fail "userFunction: set either sidecar.enabled or address, not both" }}
{{- else if $uf.sidecar.enabled }}
{{- if not $uf.sidecar.image.repository }}
{{- fail "userFunction.sidecar.image.repository is required when the sidecar is enabled" }}
{{- end }}
{{- "sidecar" }}
{{- else if $uf.address }}
{{- "address" }}
{{- else if $uf.example }}
{{- "example" }}
{{- else }}
{{- fail "userFunction: no user function; enable sidecar, set address (host:port), or set example (shoppingcart, valuecart, validator, all)" }}
{{- end }}
{{- end }}

{{/* USER_FUNCTION_HOST/PORT, Cloudstate's convention, set on both containers of a sidecar pod. */}}
{{- define "kstate.userFunctionEnv" -}}
- name: USER_FUNCTION_HOST
  value: "127.0.0.1"
- name: USER_FUNCTION_PORT
  value: {{ .Values.userFunction.sidecar.port | quote }}
{{- end }}

{{/* The flags of `kstate serve`. $(POD_NAME) and $(POD_NAMESPACE) are expanded by the kubelet. */}}
{{- define "kstate.args" -}}
{{- $k := .Values.kafka }}
{{- $mode := include "kstate.userFunctionMode" . -}}
- {{ printf "--listen=:%d" (int .Values.port) | quote }}
- {{ printf "--peer-listen=:%d" (int .Values.peerPort) | quote }}
- {{ printf "--advertise=$(POD_NAME).%s.$(POD_NAMESPACE).svc.%s:%d" (include "kstate.headlessName" .) .Values.clusterDomain (int .Values.peerPort) | quote }}
- "--node-id=$(POD_NAME)"
- "--data-dir=/var/lib/kstate"
- {{ printf "--brokers=%s" (join "," $k.brokers) | quote }}
- {{ printf "--namespace=%s" $k.namespace | quote }}
- {{ printf "--app=%s" (include "kstate.app" .) | quote }}
- {{ printf "--partitions=%d" (int $k.partitions) | quote }}
- {{ printf "--session-timeout=%s" $k.sessionTimeout | quote }}
- {{ printf "--commit-linger=%s" .Values.commitLinger | quote }}
{{- with .Values.readLease }}
- {{ printf "--read-lease=%s" . | quote }}
{{- end }}
{{- with .Values.maxActiveEntities }}
- {{ printf "--max-active-entities=%d" (int .) | quote }}
{{- end }}
{{- with .Values.maxRecordBytes }}
- {{ printf "--max-record-bytes=%d" (int .) | quote }}
{{- end }}
- {{ printf "--log-level=%s" .Values.log.level | quote }}
{{- if .Values.log.json }}
- "--log-json"
{{- end }}
{{- if eq $mode "address" }}
- {{ printf "--user-function=%s" .Values.userFunction.address | quote }}
{{- else if eq $mode "example" }}
- {{ printf "--example=%s" .Values.userFunction.example | quote }}
{{- end }}
{{- if $k.tls.enabled }}
- "--kafka-tls"
{{- if $k.tls.ca.secretName }}
- "--kafka-ca=/etc/kstate/kafka-tls/ca.crt"
{{- end }}
{{- if $k.tls.clientCert.secretName }}
- "--kafka-cert=/etc/kstate/kafka-tls/tls.crt"
- "--kafka-key=/etc/kstate/kafka-tls/tls.key"
{{- end }}
{{- else if or $k.tls.ca.secretName $k.tls.clientCert.secretName }}
{{- fail "kafka.tls: a CA or client certificate Secret is set but kafka.tls.enabled is false" }}
{{- end }}
{{- if $k.sasl.mechanism }}
{{- if not $k.sasl.username }}
{{- fail "kafka.sasl.username is required with kafka.sasl.mechanism" }}
{{- end }}
{{- if not $k.sasl.passwordSecret.name }}
{{- fail "kafka.sasl.passwordSecret.name is required with kafka.sasl.mechanism (the password goes to KSTATE_KAFKA_PASSWORD)" }}
{{- end }}
- {{ printf "--kafka-sasl-mechanism=%s" $k.sasl.mechanism | quote }}
- {{ printf "--kafka-sasl-user=%s" $k.sasl.username | quote }}
{{- end }}
{{- if .Values.metrics.enabled }}
- {{ printf "--admin-listen=:%d" (int .Values.metrics.port) | quote }}
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/* Whether the Kafka TLS files are mounted: TLS with a CA or a client certificate Secret. */}}
{{- define "kstate.kafkaTLSVolume" -}}
{{- $t := .Values.kafka.tls }}
{{- if and $t.enabled (or $t.ca.secretName $t.clientCert.secretName) }}true{{ end }}
{{- end }}
