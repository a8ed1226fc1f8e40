{{/* Names, labels and the pieces every stage's pod shares. */}}

{{- define "tapline.fullname" -}}
{{- if contains "tapline" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-tapline" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tapline.labels" -}}
app.kubernetes.io/name: tapline
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one stage: (dict "root" $ "stage" "decap"). */}}
{{- define "tapline.selector" -}}
app.kubernetes.io/name: tapline
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .stage }}
{{- end -}}

{{- define "tapline.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tapline.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tapline.image" -}}
{{- printf "%s/%s:%s" .root.Values.image.repository .stage (default .root.Chart.AppVersion .root.Values.image.tag) -}}
{{- end -}}

{{- define "tapline.natsUrl" -}}
{{- if .Values.natsUrl -}}
{{- .Values.natsUrl -}}
{{- else if .Values.nats.enabled -}}
{{- $name := ternary .Release.Name (printf "%s-nats" .Release.Name) (contains "nats" .Release.Name) -}}
{{- printf "nats://%s:4222" ($name | trunc 63 | trimSuffix "-") -}}
{{- else -}}
{{- fail "natsUrl is required when nats.enabled is false" -}}
{{- end -}}
{{- end -}}

{{/* Pod annotations: Prometheus scraping of the stage's HTTP port. */}}
{{- define "tapline.podAnnotations" -}}
{{- if .root.Values.prometheusAnnotations }}
annotations:
  prometheus.io/scrape: "true"
  prometheus.io/port: {{ .port | quote }}
  prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{/*
Environment shared by every stage: NATS, shards, stream replicas, HTTP
address, logs, and the stage's own env map.
(dict "root" $ "port" 9102 "env" .Values.reassemble.env)
*/}}
{{- define "tapline.env" -}}
- name: NATS_URL
  value: {{ include "tapline.natsUrl" .root | quote }}
- name: TAPLINE_SHARDS
  value: {{ .root.Values.shards | quote }}
- name: TAPLINE_STREAM_REPLICAS
  value: {{ .root.Values.streamReplicas | quote }}
- name: TAPLINE_HTTP
  value: {{ printf ":%v" .port | quote }}
- name: TAPLINE_LOG_FORMAT
  value: json
- name: TAPLINE_LOG_LEVEL
  value: {{ .root.Values.logLevel | quote }}
{{- with .root.Values.natsAuth.existingSecret }}
- name: TAPLINE_NATS_CREDS
  value: /etc/tapline/nats/creds
{{- end }}
{{- with .root.Values.natsAuth.userPasswordSecret }}
- name: TAPLINE_NATS_USER
  valueFrom:
    secretKeyRef: {name: {{ . }}, key: user}
- name: TAPLINE_NATS_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ . }}, key: password}
{{- end }}
{{- range $k, $v := .env }}
- name: {{ $k }}
  value: {{ $v | quote }}
{{- end }}
{{- end -}}

{{/* Probes on the stage's HTTP port: ready only when /healthz says the
stage can do its work; alive while the process answers at all (a NATS
outage must not restart a stage that is holding state). */}}
{{- define "tapline.probes" -}}
readinessProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 5
  failureThreshold: 2
livenessProbe:
  tcpSocket: {port: http}
  initialDelaySeconds: 10
  periodSeconds: 10
  failureThreshold: 6
{{- end -}}

{{- define "tapline.natsVolumeMount" -}}
{{- if .Values.natsAuth.existingSecret }}
volumeMounts:
  - name: nats-creds
    mountPath: /etc/tapline/nats
    readOnly: true
{{- end }}
{{- end -}}

{{- define "tapline.natsVolume" -}}
{{- with .Values.natsAuth.existingSecret }}
volumes:
  - name: nats-creds
    secret:
      secretName: {{ . }}
      items: [{key: creds, path: creds}]
{{- end }}
{{- end -}}

{{/* Scheduling of one stage: (.Values.<stage>). */}}
{{- define "tapline.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Checks that hold across values, run once by every render. */}}
{{- define "tapline.validate" -}}
{{- if lt (int .Values.shards) 1 -}}{{- fail "shards must be at least 1" -}}{{- end -}}
{{- if and .Values.reassemble.enabled (gt (int .Values.reassemble.replicas) (int .Values.shards)) -}}
{{- fail (printf "reassemble.replicas (%v) is more than shards (%v): the extra instances would own no shard" .Values.reassemble.replicas .Values.shards) -}}
{{- end -}}
{{- if and .Values.reassemble.autoscaling.enabled (gt (int .Values.reassemble.autoscaling.maxReplicas) (int .Values.shards)) -}}
{{- fail (printf "reassemble.autoscaling.maxReplicas (%v) is more than shards (%v)" .Values.reassemble.autoscaling.maxReplicas .Values.shards) -}}
{{- end -}}
{{- if and .Values.replay.enabled (not .Values.replay.target) -}}
{{- fail "replay.enabled needs replay.target (ws://, wss:// or tcp:// of the test system)" -}}
{{- end -}}
{{- if and .Values.replay.enabled (gt (int .Values.replay.instances) (int .Values.shards)) -}}
{{- fail (printf "replay.instances (%v) is more than shards (%v)" .Values.replay.instances .Values.shards) -}}
{{- end -}}
{{- if and .Values.archive.enabled (not .Values.archive.store) -}}
{{- fail "archive.enabled needs archive.store (s3://bucket/prefix)" -}}
{{- end -}}
{{- if not (has .Values.decap.mode (list "daemonset" "deployment")) -}}
{{- fail (printf "decap.mode must be daemonset or deployment, not %q" .Values.decap.mode) -}}
{{- end -}}
{{- end -}}

{{/* The container security context of the consuming stages. */}}
{{- define "tapline.restricted" -}}
runAsNonRoot: true
runAsUser: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
