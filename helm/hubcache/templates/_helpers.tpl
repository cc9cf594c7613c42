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
{{- $s3Keys := list "bucket" "endpoint" "region" "prefix" "forcePathStyle" "caFile" "partSize" "partsInFlight" "hotCache" }}
{{- if eq (include "hubcache.s3" .) "true" }}
{{- if not $storage.bucket }}{{ fail "config.storage.bucket is required with config.storage.driver: s3" }}{{ end }}
{{- range list "endpoint" "region" "prefix" "caFile" "partSize" }}{{ if not (get $storage .) }}{{ $_ := unset $storage . }}{{ end }}{{ end }}
{{- if kindIs "invalid" $storage.partsInFlight }}{{ $_ := unset $storage "partsInFlight" }}{{ end }}
{{- $hot := $storage.hotCache | default dict }}
{{- if not $hot.maxSize }}{{ $_ := unset $hot "maxSize" }}{{ end }}
{{- if .Values.hotCache.enabled }}{{ $_ := set $hot "path" .Values.hotCache.mountPath }}{{ end }}
{{- if $hot.path }}{{ $_ := set $storage "hotCache" $hot }}{{ else }}{{ $_ := unset $storage "hotCache" }}{{ end }}
{{- if eq (include "hubcache.s3Credentials" .) "true" }}
{{- $_ := set $storage "accessKeyIdFile" (printf "%s/s3-access-key-id" (include "hubcache.replicaSecretsDir" .)) }}
{{- $_ := set $storage "secretAccessKeyFile" (printf "%s/s3-secret-access-key" (include "hubcache.replicaSecretsDir" .)) }}
{{- end }}
{{- $_ := set $storage "path" .Values.persistence.mountPath }}
{{- else }}
{{- $_ := unset $storage "driver" }}
{{- range $s3Keys }}{{ $_ := unset $storage . }}{{ end }}
{{- $_ := set $storage "path" .Values.persistence.mountPath }}
{{- end }}
{{- $_ := set $config "storage" $storage }}
{{- if eq (include "hubcache.cluster" .) "true" }}
{{- if ne (include "hubcache.s3" .) "true" }}{{ fail "config.cluster (several replicas) needs config.storage.driver: s3: a filesystem store belongs to one hubcache process" }}{{ end }}
{{- $cluster := $config.cluster }}
{{- $redis := $cluster.redis }}
{{- $modes := 0 }}
{{- range list "url" "sentinels" "nodes" }}{{ if get $redis . }}{{ $modes = add1 $modes }}{{ else }}{{ $_ := unset $redis . }}{{ end }}{{ end }}
{{- if gt $modes 1 }}{{ fail "config.cluster.redis: set one of url, sentinels and nodes" }}{{ end }}
{{- if and $redis.sentinels (not $redis.sentinelName) }}{{ fail "config.cluster.redis.sentinelName is required with sentinels" }}{{ end }}
{{- range list "sentinelName" "username" "keyPrefix" }}{{ if not (get $redis .) }}{{ $_ := unset $redis . }}{{ end }}{{ end }}
{{- if eq (include "hubcache.redisPassword" .) "true" }}{{ $_ := set $redis "passwordFile" (printf "%s/redis-password" (include "hubcache.replicaSecretsDir" .)) }}{{ end }}
{{- $_ := set $cluster "peerSecretFile" (printf "%s/peer-secret" (include "hubcache.replicaSecretsDir" .)) }}
{{- else }}
{{- $_ := unset $config "cluster" }}
{{- end }}
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

{{/* "true" with config.storage.driver: s3. */}}
{{- define "hubcache.s3" -}}
{{- eq ((.Values.config.storage | default dict).driver | default "filesystem") "s3" }}
{{- end }}

{{/* "true" when config.cluster names a Redis: cluster is rendered, the pods share state. */}}
{{- define "hubcache.cluster" -}}
{{- $redis := (.Values.config.cluster | default dict).redis | default dict }}
{{- not (not (or $redis.url $redis.sentinels $redis.nodes)) }}
{{- end }}

{{/* "true" when several replicas may run: the s3 driver and a cluster Redis. */}}
{{- define "hubcache.replicated" -}}
{{- and (eq (include "hubcache.s3" .) "true") (eq (include "hubcache.cluster" .) "true") }}
{{- end }}

{{/* The port of cluster.peerListen, the internal follow endpoint. */}}
{{- define "hubcache.peerPort" -}}
{{- include "hubcache.portOf" (.Values.config.cluster.peerListen | default "0.0.0.0:5001") }}
{{- end }}

{{/* Where the S3 keys, the Redis password and the peer secret are mounted (files s3-access-key-id, s3-secret-access-key, redis-password, peer-secret). */}}
{{- define "hubcache.replicaSecretsDir" -}}
/etc/hubcache/replica-secrets
{{- end }}

{{/* "true" when S3 credentials come from a Secret (existing or created); both keys or neither. */}}
{{- define "hubcache.s3Credentials" -}}
{{- $c := .Values.s3Credentials }}
{{- if and (eq (include "hubcache.s3" .) "true") (or $c.existingSecret $c.accessKeyId $c.secretAccessKey) }}
{{- if and $c.existingSecret (or $c.accessKeyId $c.secretAccessKey) }}{{ fail "s3Credentials: set existingSecret or accessKeyId/secretAccessKey, not both" }}{{ end }}
{{- if and (not $c.existingSecret) (not (and $c.accessKeyId $c.secretAccessKey)) }}{{ fail "s3Credentials: set both accessKeyId and secretAccessKey" }}{{ end }}
{{- true }}
{{- else }}
{{- false }}
{{- end }}
{{- end }}

{{/* "true" when the Redis password comes from a Secret (existing or created). */}}
{{- define "hubcache.redisPassword" -}}
{{- $p := .Values.redisPassword }}
{{- if and (eq (include "hubcache.cluster" .) "true") (or $p.existingSecret $p.password) }}
{{- if and $p.existingSecret $p.password }}{{ fail "redisPassword: set existingSecret or password, not both" }}{{ end }}
{{- true }}
{{- else }}
{{- false }}
{{- end }}
{{- end }}

{{/* The generated peer secret: the one the release's Secret already holds (kept across upgrades), else a new random one. */}}
{{- define "hubcache.generatedPeerSecret" -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (printf "%s-replicas" (include "hubcache.fullname" .)) }}
{{- if and $existing $existing.data (hasKey $existing.data "peer-secret") }}
{{- index $existing.data "peer-secret" | b64dec }}
{{- else }}
{{- randAlphaNum 48 }}
{{- end }}
{{- end }}

{{/* Secret keys the chart creates for the replicas' dependencies (the values it was given, and the generated peer secret). */}}
{{- define "hubcache.createdReplicaSecrets" -}}
{{- $keys := dict }}
{{- if and (eq (include "hubcache.s3Credentials" .) "true") (not .Values.s3Credentials.existingSecret) }}
{{- $_ := set $keys "s3-access-key-id" .Values.s3Credentials.accessKeyId }}
{{- $_ := set $keys "s3-secret-access-key" .Values.s3Credentials.secretAccessKey }}
{{- end }}
{{- if and (eq (include "hubcache.redisPassword" .) "true") (not .Values.redisPassword.existingSecret) }}
{{- $_ := set $keys "redis-password" .Values.redisPassword.password }}
{{- end }}
{{- if and (eq (include "hubcache.cluster" .) "true") (not .Values.peerSecret.existingSecret) }}
{{- $_ := set $keys "peer-secret" (include "hubcache.generatedPeerSecret" .) }}
{{- end }}
{{- toJson $keys }}
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
