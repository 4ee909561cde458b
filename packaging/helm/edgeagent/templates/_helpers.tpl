{{- define "edgeagent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "edgeagent.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "edgeagent.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "edgeagent.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "edgeagent.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "edgeagent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* selector labels of one tier: (dict "root" $ "component" "agent") */}}
{{- define "edgeagent.selector" -}}
app.kubernetes.io/name: {{ include "edgeagent.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "edgeagent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "edgeagent.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "edgeagent.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* the hub's in-cluster OTLP/HTTP address, for the agents */}}
{{- define "edgeagent.hubEndpoint" -}}
http://{{ include "edgeagent.fullname" . }}-hub.{{ .Release.Namespace }}.svc:4318
{{- end -}}

{{/* container ports; the configs listen on these */}}
{{- define "edgeagent.ports" -}}
- {name: otlp-grpc, containerPort: 4317, protocol: TCP{{ if .hostPorts }}, hostPort: 4317{{ end }}}
- {name: otlp-http, containerPort: 4318, protocol: TCP{{ if .hostPorts }}, hostPort: 4318{{ end }}}
- {name: health, containerPort: 13133, protocol: TCP}
- {name: metrics, containerPort: 8888, protocol: TCP}
{{- end -}}

{{/* what every edgeagent container shares: (dict "root" $ "tier" .Values.agent "upstream" URL) */}}
{{- define "edgeagent.container" -}}
- name: edgeagent
  image: {{ include "edgeagent.image" .root }}
  imagePullPolicy: {{ .root.Values.image.pullPolicy }}
  args: ["run", "--config", "/etc/edgeagent/config.yaml"]
  env:
    - name: EDGEAGENT_UPSTREAM
      value: {{ .upstream | quote }}
    - name: NODE_NAME
      valueFrom:
        fieldRef: {fieldPath: spec.nodeName}
    - name: TMPDIR
      value: /tmp
    {{- with .tier.drainTimeoutSeconds }}
    - name: EDGEAGENT_DRAIN_TIMEOUT
      value: {{ . | quote }}
    {{- end }}
    {{- with .tier.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .tier.envFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  ports:
    {{- include "edgeagent.ports" (dict "hostPorts" .hostPorts) | nindent 4 }}
  {{- with .root.Values.startupProbe }}
  startupProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  livenessProbe:
    {{- toYaml .root.Values.livenessProbe | nindent 4 }}
  readinessProbe:
    {{- toYaml .root.Values.readinessProbe | nindent 4 }}
  {{- with .lifecycle }}
  lifecycle:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  resources:
    {{- toYaml .tier.resources | nindent 4 }}
  securityContext:
    {{- toYaml .root.Values.containerSecurityContext | nindent 4 }}
  volumeMounts:
    - {name: config, mountPath: /etc/edgeagent, readOnly: true}
    - {name: queue, mountPath: /var/lib/edgeagent}
    # the same volume where otelcol configs keep their file_storage queue (its default directory),
    # so such a config keeps its backlog across pod restarts as it is
    - {name: queue, mountPath: /var/lib/otelcol}
    - {name: tmp, mountPath: /tmp}
{{- end -}}

{{/* what every edgeagent pod shares: (dict "root" $ "tier" .Values.agent) */}}
{{- define "edgeagent.podSpec" -}}
serviceAccountName: {{ include "edgeagent.serviceAccountName" .root }}
automountServiceAccountToken: false
terminationGracePeriodSeconds: {{ .tier.terminationGracePeriodSeconds }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tier.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .tier.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tier.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tier.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* the probes ask the health port (13133) on the pod's address: a config whose health_check does
not serve there would see its pods killed by the liveness probe, over and over; refuse it at render.
(dict "root" $ "config" .Values.agent.config "name" "agent") */}}
{{- define "edgeagent.checkProbes" -}}
{{- $probes := list .root.Values.livenessProbe .root.Values.readinessProbe .root.Values.startupProbe -}}
{{- $asked := false -}}
{{- range $probe := $probes -}}
{{- if and $probe $probe.httpGet -}}
{{- $asked = true -}}
{{- end -}}
{{- end -}}
{{- $config := .config | default dict -}}
{{- $extensions := $config.extensions | default dict -}}
{{- $reachable := false -}}
{{- range $id := (($config.service | default dict).extensions | default list) -}}
{{- if or (eq (toString $id) "health_check") (hasPrefix "health_check/" (toString $id)) -}}
{{- $settings := (index $extensions $id) | default dict -}}
{{- $endpoint := $settings.endpoint | default "localhost:13133" | toString -}}
{{- $host := regexReplaceAll ":[0-9]+$" $endpoint "" -}}
{{- if and (hasSuffix ":13133" $endpoint) (not (has $host (list "localhost" "127.0.0.1" "::1" "[::1]"))) -}}
{{- $reachable = true -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and $asked (not $reachable) -}}
{{- fail (printf "%s.config: the probes ask /health/live and /health/ready on the pod's port 13133, and no health_check extension in service::extensions serves there: set extensions::health_check::endpoint: 0.0.0.0:13133 and list health_check in service::extensions (otelcol's default endpoint, localhost:13133, is out of the probes' reach)" .name) -}}
{{- end -}}
{{- end -}}

{{/* every file_storage directory lies on the queue volume (mounted at both paths below): elsewhere it
is on the container's root, read-only (a crash loop) or gone with every pod restart; refuse it at render.
(dict "config" .Values.agent.config "name" "agent") */}}
{{- define "edgeagent.checkQueue" -}}
{{- $mounts := list "/var/lib/edgeagent" "/var/lib/otelcol" -}}
{{- range $id, $settings := ((.config | default dict).extensions | default dict) -}}
{{- if or (eq (toString $id) "file_storage") (hasPrefix "file_storage/" (toString $id)) -}}
{{- $directory := (($settings | default dict).directory | default "") | toString | trimSuffix "/" -}}
{{- $onVolume := or (eq $directory "") (contains "${" $directory) -}}
{{- range $mount := $mounts -}}
{{- if or (eq $directory $mount) (hasPrefix (printf "%s/" $mount) $directory) -}}
{{- $onVolume = true -}}
{{- end -}}
{{- end -}}
{{- if not $onVolume -}}
{{- fail (printf "%s.config: extensions::%s::directory %s is not on the queue volume, so the queue would be on the container's root (read-only, or lost with every pod restart): put it under /var/lib/edgeagent or /var/lib/otelcol" $.name $id $directory) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
