{{/*
Names and labels. The controller's command line (flags and environment) is in _controller.tpl.
*/}}

{{- define "ecs-vnc-controller.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release name, with the chart name added unless the release name already contains it. */}}
{{- define "ecs-vnc-controller.fullname" -}}
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

{{- define "ecs-vnc-controller.serviceAccountName" -}}
{{- default (include "ecs-vnc-controller.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/* The controller's identity in the API server, as the admission policies match it. */}}
{{- define "ecs-vnc-controller.user" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "ecs-vnc-controller.serviceAccountName" . }}
{{- end }}

{{- define "ecs-vnc-controller.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "ecs-vnc-controller.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: ecs-vnc-controller
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
The controller Pods' labels, selected by the Deployment, Service, PDB and NetworkPolicy. No
instance label: the Deployment selector is immutable, and deploy/ (rendered from this chart) has
selected these two since its first version. One release per namespace (the Lease and the
fingerprint-key Secret have fixed names).
*/}}
{{- define "ecs-vnc-controller.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ecs-vnc-controller.name" . }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "ecs-vnc-controller.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* "true" when leader election is on: as asked, else when more than one replica runs. */}}
{{- define "ecs-vnc-controller.leaderElection" -}}
{{- if kindIs "invalid" .Values.leaderElection.enabled }}
{{- gt (int .Values.replicas) 1 }}
{{- else }}
{{- .Values.leaderElection.enabled }}
{{- end }}
{{- end }}

{{/* The Lease of leader election: its name is the controller's default, --lease-name. */}}
{{- define "ecs-vnc-controller.leaseName" -}}
ecs-vnc-controller
{{- end }}

{{/* The Secret the controller keeps its fingerprint key in (a fixed name, in its namespace). */}}
{{- define "ecs-vnc-controller.fingerprintKeySecret" -}}
ecs-vnc-controller-fingerprint-key
{{- end }}

{{/* Combinations of values the schema cannot refuse, refused with a message saying why. */}}
{{- define "ecs-vnc-controller.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (eq (include "ecs-vnc-controller.leaderElection" .) "false") }}
{{- fail (printf "replicas: %v needs leader election (leaderElection.enabled: true or null): without it every replica would reconcile, and call ECS, at once" .Values.replicas) }}
{{- end }}
{{- end }}
