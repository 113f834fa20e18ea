{{/*
Chart name, truncated to 63 characters (the DNS label limit).
*/}}
{{- define "dualstack-ingress.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the release name, plus the chart name unless the release name already contains it.
*/}}
{{- define "dualstack-ingress.fullname" -}}
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

{{/*
Chart name and version for the helm.sh/chart label.
*/}}
{{- define "dualstack-ingress.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "dualstack-ingress.labels" -}}
helm.sh/chart: {{ include "dualstack-ingress.chart" . }}
{{ include "dualstack-ingress.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dualstack-ingress
{{- end }}

{{/*
Labels that select the proxy pods.
*/}}
{{- define "dualstack-ingress.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dualstack-ingress.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
ServiceAccount name.
*/}}
{{- define "dualstack-ingress.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dualstack-ingress.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference; the tag defaults to the chart's appVersion.
*/}}
{{- define "dualstack-ingress.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Name of the metrics Service.
*/}}
{{- define "dualstack-ingress.metricsServiceName" -}}
{{- printf "%s-metrics" (include "dualstack-ingress.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{/*
Whether the metrics Service exists: "true" or "".
*/}}
{{- define "dualstack-ingress.metricsService" -}}
{{- if or .Values.metrics.service.enabled .Values.serviceMonitor.enabled }}true{{ end }}
{{- end }}

{{/*
Socket addresses for one port on every bind address, as a JSON list: IPv6 addresses are bracketed,
e.g. ["0.0.0.0:8080","[::]:8080"]. Call with (dict "addrs" LIST "port" PORT).
*/}}
{{- define "dualstack-ingress.socketAddrs" -}}
{{- $out := list }}
{{- range .addrs }}
{{- if contains ":" . }}
{{- $out = append $out (printf "[%s]:%d" . (int $.port)) }}
{{- else }}
{{- $out = append $out (printf "%s:%d" . (int $.port)) }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
Data-plane listen entries for one port on every bind address, as a JSON list: the plain socket addresses,
or with proxyProtocol maps such as {"address":"[::]:8080","proxyProtocol":true}.
Call with (dict "addrs" LIST "port" PORT "proxyProtocol" BOOL).
*/}}
{{- define "dualstack-ingress.listenAddrs" -}}
{{- $addrs := include "dualstack-ingress.socketAddrs" . | fromJsonArray }}
{{- if .proxyProtocol }}
{{- $out := list }}
{{- range $addrs }}
{{- $out = append $out (dict "address" . "proxyProtocol" true) }}
{{- end }}
{{- toJson $out }}
{{- else }}
{{- toJson $addrs }}
{{- end }}
{{- end }}

{{/*
A duration such as 500ms, 30s, 2m or 1h, in whole seconds (rounded up).
*/}}
{{- define "dualstack-ingress.seconds" -}}
{{- $d := toString . }}
{{- $n := regexFind "^[0-9]+" $d | int }}
{{- $unit := trimPrefix (regexFind "^[0-9]+" $d) $d }}
{{- if eq $unit "ms" }}{{ div (add $n 999) 1000 }}
{{- else if eq $unit "s" }}{{ $n }}
{{- else if eq $unit "m" }}{{ mul $n 60 }}
{{- else if eq $unit "h" }}{{ mul $n 3600 }}
{{- else }}{{ fail (printf "duration %q: use a number followed by ms, s, m or h" $d) }}
{{- end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the set value (which must exceed the drain time), else drain + 15 seconds.
*/}}
{{- define "dualstack-ingress.terminationGracePeriodSeconds" -}}
{{- $drain := include "dualstack-ingress.seconds" .Values.config.timeouts.drain | int }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $drain 15 }}
{{- else if le (int .Values.terminationGracePeriodSeconds) $drain }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed config.timeouts.drain (%d seconds)" (int .Values.terminationGracePeriodSeconds) $drain) }}
{{- else }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}
