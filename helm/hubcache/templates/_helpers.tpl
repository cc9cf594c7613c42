{{/* Chart name, truncated to the 63 characters Kubernetes names allow. */}}
{{- define "hubcache.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, plus the chart name unless the release name contains it. */}}
{{- define "hubcache.fullname" -}}
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

{{- define "hubcache.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hubcache.labels" -}}
helm.sh/chart: {{ include "hubcache.chart" . }}
{{ include "hubcache.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "hubcache.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hubcache.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "hubcache.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hubcache.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "hubcache.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The port of a HOST:PORT address (config.listen, config.metrics.listen). */}}
{{- define "hubcache.portOf" -}}
{{- regexFind "[0-9]+$" . }}
{{- end }}

{{- define "hubcache.port" -}}
{{- include "hubcache.portOf" .Values.config.listen }}
{{- end }}

{{/* Where an upstream's password file is mounted: /etc/hubcache/credentials/<registry>/password. */}}
{{- define "hubcache.credentialsDir" -}}
/etc/hubcache/credentials
{{- end }}

{{/* Key of an upstream's password in the chart-created Secret (Secret keys cannot contain ':'). */}}
{{- define "hubcache.credentialKey" -}}
{{- replace ":" "_" . }}
{{- end }}

{{/* Upstream registries with a password the chart creates a Secret for. */}}
{{- define "hubcache.createdCredentials" -}}
{{- range $registry, $c := .Values.upstreamCredentials }}
{{- if and $c $c.password }}{{ $registry }} {{ end }}
{{- end }}
{{- end }}

{{/*
config.yaml: the values' `config` with empty optional keys dropped, plus storage.path and each
upstream's username/passwordFile. Fails on combinations hubcache would reject at start.
*/}}
{{- define "hubcache.config" -}}
{{- $config := deepCopy .Values.config }}
{{- if not $config.instanceId }}{{ $_ := unset $config "instanceId" }}{{ end }}
{{- if not $config.metrics.listen }}{{ $_ := unset $config.metrics "listen" }}{{ end }}
{{- $storage := $config.storage | default dict }}
{{- if not $storage.maxSize }}{{ $_ := unset $storage "maxSize" }}{{ end }}
{{- if not $storage.minFreeSpace }}{{ $_ := unset $storage "minFreeSpace" }}{{ end }}
{{- $_ := set $storage "path" .Values.persistence.mountPath }}
{{- $_ := set $config "storage" $storage }}
{{- $upstreams := $config.upstreams | default dict }}
{{- range $registry, $up := $upstreams }}
{{- if kindIs "invalid" $up }}{{ $_ := unset $upstreams $registry }}
{{- else if not (or $up.url (and (eq $registry "docker.io") (eq $config.defaultUpstream "docker.io"))) }}
{{- fail (printf "config.upstreams.%s.url is required (only docker.io, as the default upstream, has one by default)" $registry) }}
{{- end }}
{{- end }}
{{- range $registry, $c := .Values.upstreamCredentials }}
{{- if not (or (hasKey $upstreams $registry) (and (eq $registry "docker.io") (eq $config.defaultUpstream "docker.io"))) }}
{{- fail (printf "upstreamCredentials.%s: %s is not configured under config.upstreams" $registry $registry) }}
{{- end }}
{{- if not $c.username }}
{{- fail (printf "upstreamCredentials.%s.username is required" $registry) }}
{{- end }}
{{- if eq (empty $c.password) (empty $c.existingSecret) }}
{{- fail (printf "upstreamCredentials.%s: set password or existingSecret (one of them)" $registry) }}
{{- end }}
{{- $up := get $upstreams $registry | default dict }}
{{- $_ := set $up "username" $c.username }}
{{- $_ := set $up "passwordFile" (printf "%s/%s/password" (include "hubcache.credentialsDir" $) $registry) }}
{{- $_ := set $upstreams $registry $up }}
{{- end }}
{{- if not (or (hasKey $upstreams $config.defaultUpstream) (eq $config.defaultUpstream "docker.io")) }}
{{- fail (printf "config.defaultUpstream: %s is not configured under config.upstreams" $config.defaultUpstream) }}
{{- end }}
{{- $_ := set $config "upstreams" $upstreams }}
{{- $auth := $config.auth | default dict }}
{{- if not $auth.realm }}{{ $_ := unset $auth "realm" }}{{ end }}
{{- if not $auth.anonymousPullCidrs }}{{ $_ := unset $auth "anonymousPullCidrs" }}{{ end }}
{{- if .Values.auth.htpasswdSecret }}{{ $_ := set $auth "htpasswd" (printf "%s/htpasswd" .Values.auth.mountPath) }}{{ end }}
{{- $_ := set $config "auth" $auth }}
{{- if .Values.tls.enabled }}
{{- if not .Values.tls.secretName }}{{ fail "tls.enabled needs tls.secretName (a kubernetes.io/tls Secret)" }}{{ end }}
{{- $_ := set $config "tls" (dict "certificate" (printf "%s/tls.crt" .Values.tls.mountPath) "key" (printf "%s/tls.key" .Values.tls.mountPath)) }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/* The registries the node configuration mirrors: nodeConfiguration.registries or every upstream. */}}
{{- define "hubcache.mirroredRegistries" -}}
{{- $upstreams := .Values.config.upstreams | default dict }}
{{- $registries := .Values.nodeConfiguration.registries }}
{{- if not $registries }}
{{- $registries = list }}
{{- range $registry, $up := $upstreams }}{{ if $up }}{{ $registries = append $registries $registry }}{{ end }}{{ end }}
{{- if and (eq $.Values.config.defaultUpstream "docker.io") (not (has "docker.io" $registries)) }}{{ $registries = append $registries "docker.io" }}{{ end }}
{{- end }}
{{- range $registries }}
{{- if not (or (get $upstreams .) (and (eq . "docker.io") (eq $.Values.config.defaultUpstream "docker.io"))) }}
{{- fail (printf "nodeConfiguration.registries: %s is not configured under config.upstreams" .) }}
{{- end }}
{{- end }}
{{- toJson (sortAlpha $registries | uniq) }}
{{- end }}

{{/* The URL containerd on the nodes uses to reach hubcache. */}}
{{- define "hubcache.mirrorEndpoint" -}}
{{- if .Values.nodeConfiguration.mirrorEndpoint }}
{{- .Values.nodeConfiguration.mirrorEndpoint | trimSuffix "/" }}
{{- else if and .Values.service.clusterIP (ne .Values.service.clusterIP "None") }}
{{- printf "%s://%s:%v" (ternary "https" "http" .Values.tls.enabled) .Values.service.clusterIP .Values.service.port }}
{{- else }}
{{- printf "%s://%s.%s.svc.%s:%v" (ternary "https" "http" .Values.tls.enabled) (include "hubcache.fullname" .) .Release.Namespace .Values.nodeConfiguration.clusterDomain .Values.service.port }}
{{- end }}
{{- end }}
