{{- define "task-api.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "task-api.fullname" -}}
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

{{- define "task-api.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "task-api.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- /* The pods of one component of the release: (dict "context" $ "component" "worker"). */}}
{{- define "task-api.componentSelectorLabels" -}}
app.kubernetes.io/name: {{ include "task-api.name" .context }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- /* The API's pods. The reminder workers', beat's and the migration Job's pods have other components,
so that no Service, budget, autoscaler or ReplicaSet of the API ever counts them. */}}
{{- define "task-api.selectorLabels" -}}
{{ include "task-api.componentSelectorLabels" (dict "context" . "component" "api") }}
{{- end }}

{{- /* topologySpreadConstraints for one component's pods: each constraint gets their labelSelector
unless it has one. (dict "context" $ "component" "worker") */}}
{{- define "task-api.topologySpread" -}}
{{- with .context.Values.topologySpreadConstraints }}
{{- $selector := dict "matchLabels" (include "task-api.componentSelectorLabels" $ | fromYaml) }}
{{- $constraints := list }}
{{- range . }}
{{- $constraints = append $constraints (merge (deepCopy .) (dict "labelSelector" $selector)) }}
{{- end }}
topologySpreadConstraints:
  {{- toYaml $constraints | nindent 2 }}
{{- end }}
{{- end }}

{{- /* The settings every process of the app reads, the same in the API's, the workers' and beat's pods:
the ConfigMap, then the Secret's. */}}
{{- define "task-api.envFrom" -}}
- configMapRef:
    name: {{ include "task-api.fullname" . }}
{{- end }}

{{- define "task-api.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "task-api.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "task-api.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- /* Every non-secret setting: the ConfigMap's data, and the migration Job's env. */}}
{{- define "task-api.settings" -}}
APP_ENV: production
{{- /* Prometheus scrapes the pod's address; no Service or Ingress exposes the metrics port. */}}
METRICS_HOST: "0.0.0.0"
{{- range $name, $value := .Values.config }}
{{ $name }}: {{ $value | quote }}
{{- end }}
{{- end }}

{{- /* Behind the chart's Ingress every connection comes from an ingress controller pod. Unless
config.FORWARDED_ALLOW_IPS names those pods, the app trusts no X-Forwarded-For and sees every client
as the controller: one budget for all, and one client can spend everyone's logins. */}}
{{- define "task-api.requireTrustedProxy" -}}
{{- if not (trim (.Values.config.FORWARDED_ALLOW_IPS | default "")) }}
{{- fail (printf `ingress.enabled is true but config.FORWARDED_ALLOW_IPS is empty: the API would trust no proxy.
Set config.FORWARDED_ALLOW_IPS to the addresses your ingress controller's pods connect from
(comma-separated IPs or CIDRs), e.g. the cluster's pod CIDR:
  --set-string config.FORWARDED_ALLOW_IPS=10.244.0.0/16
Why: the API trusts X-Forwarded-For only from those addresses. Without them every request through the
ingress comes from the controller, so all clients share one rate-limit budget (RATE_LIMIT, %s) and one
login budget (AUTH_RATE_LIMIT, %s on /login and /register): a single client can lock everyone out of login.`
  (.Values.config.RATE_LIMIT | default "100/minute") (.Values.config.AUTH_RATE_LIMIT | default "10/minute")) }}
{{- end }}
{{- end }}

{{- define "task-api.secretEnv" -}}
- name: SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.existingSecret }}
      key: {{ .Values.secretKeys.secretKey }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.existingSecret }}
      key: {{ .Values.secretKeys.databaseUrl }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.existingSecret }}
      key: {{ .Values.secretKeys.redisUrl }}
{{- end }}

{{- /* Only the reminder workers mail, so only they get the mail server's URL (and its password). */}}
{{- define "task-api.smtpEnv" -}}
- name: SMTP_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.existingSecret }}
      key: {{ .Values.secretKeys.smtpUrl }}
{{- end }}

{{- /* The pod template annotations every long-running pod carries: a config change rolls them all. */}}
{{- define "task-api.podAnnotations" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- /* The image's user; the root filesystem is read-only, so /tmp (gunicorn's worker files, the
metrics' multiprocess directory) is an emptyDir. */}}
{{- define "task-api.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "task-api.containerSecurityContext" -}}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
{{- end }}

{{- /* What every pod of the chart shares: where it runs, and how its image is pulled. */}}
{{- define "task-api.podPlacement" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
