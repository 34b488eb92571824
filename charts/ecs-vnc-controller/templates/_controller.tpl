{{/*
The controller's command line: every flag and environment variable the chart sets is rendered
here, from values with user-facing names, so that a renamed flag or variable is a change of one
line of this file.
*/}}

{{- define "ecs-vnc-controller.args" -}}
{{- $v := .Values -}}
- run
- {{ printf "--metrics-addr=0.0.0.0:%d" (int $v.metrics.port) | quote }}
- {{ printf "--health-probe-addr=0.0.0.0:%d" (int $v.healthProbe.port) | quote }}
- {{ printf "--log-format=%s" $v.log.format | quote }}
{{- if eq (include "ecs-vnc-controller.leaderElection" .) "true" }}
# Only the holder of the Lease reconciles; the others stand by.
- "--leader-elect"
{{- with $v.leaderElection.leaseDurationSeconds }}
- {{ printf "--leader-elect-lease-duration=%vs" . | quote }}
{{- end }}
{{- with $v.leaderElection.renewDeadlineSeconds }}
- {{ printf "--leader-elect-renew-deadline=%vs" . | quote }}
{{- end }}
{{- with $v.leaderElection.retryPeriodSeconds }}
- {{ printf "--leader-elect-retry-period=%vs" . | quote }}
{{- end }}
{{- if gt (int ($v.leaderElection.shards | default 1)) 1 }}
- {{ printf "--shards=%d" (int $v.leaderElection.shards) | quote }}
{{- end }}
{{- end }}
{{- with $v.watchNamespaces }}
- {{ printf "--watch-namespaces=%s" (join "," .) | quote }}
{{- end }}
{{- with $v.defaultCredentials.namespaces }}
- {{ printf "--default-credentials-namespaces=%s" (join "," .) | quote }}
{{- end }}
{{- with $v.ecs.endpoint }}
- {{ printf "--ecs-endpoint=%s" . | quote }}
{{- end }}
{{- with $v.ecs.signature }}
- {{ printf "--ecs-signature=%s" . | quote }}
{{- end }}
{{- with $v.ecs.qps }}
{{- if kindIs "map" . }}
{{- $pairs := list }}
{{- range $action, $qps := . }}
{{- if eq $action "default" }}
{{- $pairs = prepend $pairs (printf "%v" $qps) }}
{{- else }}
{{- $pairs = append $pairs (printf "%s=%v" $action $qps) }}
{{- end }}
{{- end }}
- {{ printf "--ecs-qps=%s" (join "," $pairs) | quote }}
{{- else }}
- {{ printf "--ecs-qps=%v" . | quote }}
{{- end }}
{{- end }}
{{- with $v.sts.endpoint }}
- {{ printf "--sts-endpoint=%s" . | quote }}
{{- end }}
{{- with $v.sts.oidcProviderArn }}
- {{ printf "--oidc-provider-arn=%s" . | quote }}
{{- end }}
{{- with $v.rebootTimeoutSeconds }}
- {{ printf "--reboot-timeout=%vs" . | quote }}
{{- end }}
{{- if $v.allowInsecureHttp }}
- "--allow-insecure-http"
{{- end }}
{{- range $v.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{- define "ecs-vnc-controller.env" -}}
# Where the controller keeps its fingerprint-key Secret and its Lease.
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
# The instance of the Events the controller records, and the holderIdentity of the Lease.
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: RUST_LOG
  value: {{ .Values.log.level | quote }}
# The controller's own Alibaba Cloud credentials, optional: the Secret
# {{ .Values.defaultCredentials.secretName }} of this namespace, key `credentials` (an Alibaba
# credentials file), mounted below and read again at every use, so a rotated key needs no restart.
# See docs/configuration/credentials.md, "The controller's own credentials".
- name: ALIBABA_CLOUD_CREDENTIALS_FILE
  value: /etc/ecs-vnc/default-credentials/credentials
# The ECS instance's RAM role (the metadata service, last in the credentials chain):
# {{ ternary "allowed (defaultCredentials.useInstanceRole)" "off, so the controller never acts with the role of whichever node it runs on" .Values.defaultCredentials.useInstanceRole }}.
- name: ALIBABA_CLOUD_ECS_METADATA_DISABLED
  value: {{ ternary "false" "true" .Values.defaultCredentials.useInstanceRole | quote }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
