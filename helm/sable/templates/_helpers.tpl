{{/* Names, labels, the rendered sable.toml and the pod template every role shares. */}}

{{- define "sable.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sable.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The name of one role's objects: <fullname>-<component>. */}}
{{- define "sable.componentName" -}}
{{- printf "%s-%s" (include "sable.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sable.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "sable.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sable
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one role: {root, component}. */}}
{{- define "sable.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sable.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "sable.componentLabels" -}}
{{ include "sable.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "sable.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sable.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sable.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else if not .Values.secrets.create -}}
{{- fail "secrets.create is false: name the Secret holding SABLE_DATABASE_URL in secrets.existingSecret" -}}
{{- else -}}
{{- include "sable.fullname" . -}}
{{- end -}}
{{- end -}}

{{- define "sable.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Where the ConfigMaps are mounted, and the settings that point at them. */}}
{{- define "sable.configDir" -}}/etc/sable/config{{- end -}}
{{- define "sable.agentsDir" -}}/etc/sable/agents{{- end -}}
{{- define "sable.skillsDir" -}}/etc/sable/skills{{- end -}}

{{/* The sidecar's gRPC URL for workers and gateways ("" when it is disabled). */}}
{{- define "sable.mcpSidecarUrl" -}}
{{- if .Values.mcpSidecar.enabled -}}
{{- printf "http://%s:%v" (include "sable.componentName" (dict "root" . "component" "mcp-sidecar")) (int64 .Values.mcpSidecar.service.port) -}}
{{- end -}}
{{- end -}}

{{/* One value as TOML: integers stay integers (Helm reads numbers as floats). */}}
{{- define "sable.tomlValue" -}}
{{- $v := . -}}
{{- if kindIs "bool" $v -}}
{{- $v -}}
{{- else if or (kindIs "float64" $v) (kindIs "int64" $v) (kindIs "int" $v) -}}
{{- int64 $v -}}
{{- else if kindIs "string" $v -}}
{{- toJson $v -}}
{{- else if kindIs "slice" $v -}}
[{{ range $i, $e := $v }}{{ if $i }}, {{ end }}{{ include "sable.tomlValue" $e }}{{ end }}]
{{- else if kindIs "map" $v -}}
{ {{- range $i, $k := keys $v | sortAlpha }}{{ if $i }},{{ end }} {{ toJson $k }} = {{ include "sable.tomlValue" (get $v $k) }}{{ end }} }
{{- else -}}
{{- fail (printf "cannot write %v as TOML" $v) -}}
{{- end -}}
{{- end -}}

{{/* sable.toml: the settings of values plus those the chart derives (paths of the
mounted folders, the NATS URL). Each role's addresses, and the sidecar's URL for the
roles that call it, come from its env. */}}
{{- define "sable.settingsToml" -}}
# Rendered by the Sable chart from .Values.settings; keys as in config/sable.toml.
nats_url = {{ toJson .Values.nats.url }}
agents_dir = {{ toJson (include "sable.agentsDir" .) }}
skills_dir = {{ toJson (include "sable.skillsDir" .) }}
bindings_file = {{ toJson (printf "%s/bindings.toml" (include "sable.configDir" .)) }}
providers_file = {{ toJson (printf "%s/providers.toml" (include "sable.configDir" .)) }}
models_file = {{ toJson (printf "%s/models.toml" (include "sable.configDir" .)) }}
mcp_file = {{ toJson (printf "%s/mcp.toml" (include "sable.configDir" .)) }}
{{- range $key := keys .Values.settings | sortAlpha }}
{{- $value := get $.Values.settings $key }}
{{- if not (kindIs "invalid" $value) }}
{{ $key }} = {{ include "sable.tomlValue" $value }}
{{- end }}
{{- end }}
{{- end -}}

{{/* terminationGracePeriodSeconds: shutdown_grace_ms rounded up, plus the role's extra. */}}
{{- define "sable.terminationGrace" -}}
{{- $ms := int64 .root.Values.settings.shutdown_grace_ms -}}
{{- add (div (add $ms 999) 1000) (int64 .values.terminationGraceExtraSeconds) -}}
{{- end -}}

{{/* Files of a folder as ConfigMap data: "/" in a path becomes "__" in its key. */}}
{{- define "sable.folderData" -}}
{{- $root := .root -}}
{{- $files := dict -}}
{{- if .defaults -}}
{{- range $path, $_ := $root.Files.Glob (printf "files/%s/**" .folder) -}}
{{- $_ := set $files (trimPrefix (printf "files/%s/" $.folder) $path) ($root.Files.Get $path) -}}
{{- end -}}
{{- end -}}
{{- range $path, $content := .extra -}}
{{- $_ := set $files $path $content -}}
{{- end -}}
{{- range $path := keys $files | sortAlpha }}
{{ replace "/" "__" $path | quote }}: {{ get $files $path | toYaml | indent 2 | trim }}
{{- end -}}
{{- end -}}

{{/* The items mapping keys back to paths, for the volume of a folder. */}}
{{- define "sable.folderItems" -}}
{{- $root := .root -}}
{{- $paths := dict -}}
{{- if .defaults -}}
{{- range $path, $_ := $root.Files.Glob (printf "files/%s/**" .folder) -}}
{{- $_ := set $paths (trimPrefix (printf "files/%s/" $.folder) $path) true -}}
{{- end -}}
{{- end -}}
{{- range $path, $_ := .extra -}}
{{- $_ := set $paths $path true -}}
{{- end -}}
{{- range $path := keys $paths | sortAlpha }}
- key: {{ replace "/" "__" $path | quote }}
  path: {{ $path | quote }}
{{- end -}}
{{- end -}}

{{/* Environment every role shares. */}}
{{- define "sable.commonEnv" -}}
- name: SABLE_CONFIG
  value: {{ printf "%s/sable.toml" (include "sable.configDir" .) | quote }}
{{- with .Values.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with .Values.otel.resourceAttributes }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ . | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The pod spec of a serving role: {root, component, values, args, env, ports,
healthPort}. */}}
{{- define "sable.podSpec" -}}
{{- $root := .root -}}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
serviceAccountName: {{ include "sable.serviceAccountName" $root | default "default" }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
terminationGracePeriodSeconds: {{ include "sable.terminationGrace" . }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
containers:
  - name: {{ .component }}
    image: {{ include "sable.image" $root | quote }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    command: ["/usr/local/bin/sable"]
    args:
      {{- toYaml .args | nindent 6 }}
    env:
      {{- include "sable.commonEnv" $root | nindent 6 }}
      {{- with .env }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
      {{- with .values.extraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    envFrom:
      - secretRef:
          name: {{ include "sable.secretName" $root }}
    ports:
      {{- toYaml .ports | nindent 6 }}
    livenessProbe:
      httpGet:
        path: /healthz
        port: {{ .healthPort }}
      {{- toYaml $root.Values.probes.liveness | nindent 6 }}
    readinessProbe:
      httpGet:
        path: /readyz
        port: {{ .healthPort }}
      {{- toYaml $root.Values.probes.readiness | nindent 6 }}
    resources:
      {{- toYaml .values.resources | nindent 6 }}
    securityContext:
      {{- toYaml $root.Values.securityContext | nindent 6 }}
    volumeMounts:
      - name: config
        mountPath: {{ include "sable.configDir" $root }}
        readOnly: true
      - name: agents
        mountPath: {{ include "sable.agentsDir" $root }}
        readOnly: true
      - name: skills
        mountPath: {{ include "sable.skillsDir" $root }}
        readOnly: true
      - name: tmp
        mountPath: /tmp
volumes:
  - name: config
    configMap:
      name: {{ include "sable.componentName" (dict "root" $root "component" "config") }}
  - name: agents
    configMap:
      name: {{ include "sable.componentName" (dict "root" $root "component" "agents") }}
      items:
        {{- include "sable.folderItems" (dict "root" $root "folder" "agents" "defaults" $root.Values.agents.defaults "extra" $root.Values.agents.files) | nindent 8 }}
  - name: skills
    configMap:
      name: {{ include "sable.componentName" (dict "root" $root "component" "skills") }}
      items:
        {{- include "sable.folderItems" (dict "root" $root "folder" "skills" "defaults" $root.Values.skills.defaults "extra" $root.Values.skills.files) | nindent 8 }}
  - name: tmp
    emptyDir:
      sizeLimit: 64Mi
{{- end -}}

{{/* A Deployment of one role: {root, component, values, args, env, ports, healthPort}. */}}
{{- define "sable.deployment" -}}
{{- $root := .root -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "sable.componentName" . }}
  labels:
    {{- include "sable.componentLabels" . | nindent 4 }}
spec:
  {{- if not .scaled }}
  replicas: {{ .values.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "sable.selectorLabels" . | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 0
      maxSurge: 1
  template:
    metadata:
      labels:
        {{- include "sable.componentLabels" . | nindent 8 }}
      annotations:
        checksum/config: {{ include (print $root.Template.BasePath "/configmaps.yaml") $root | sha256sum }}
        {{- with .values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      {{- include "sable.podSpec" . | nindent 6 }}
{{- end -}}

{{/* The Secret's keys: the variables the binary reads secrets from. */}}
{{- define "sable.secretData" -}}
SABLE_DATABASE_URL: {{ required "database.url is required" .Values.database.url | quote }}
{{- with .Values.secrets.natsUrl }}
SABLE_NATS_URL: {{ . | quote }}
{{- end }}
{{- with .Values.secrets.secretsKey }}
SABLE_SECRETS_KEY: {{ . | quote }}
{{- end }}
{{- with .Values.secrets.adminKey }}
SABLE_ADMIN_KEY: {{ . | quote }}
{{- end }}
{{- range $name := keys .Values.secrets.providerKeys | sortAlpha }}
{{ $name }}: {{ get $.Values.secrets.providerKeys $name | quote }}
{{- end }}
{{- with .Values.secrets.langfusePublicKey }}
LANGFUSE_PUBLIC_KEY: {{ . | quote }}
{{- end }}
{{- with .Values.secrets.langfuseSecretKey }}
LANGFUSE_SECRET_KEY: {{ . | quote }}
{{- end }}
{{- end -}}
