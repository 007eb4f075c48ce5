{{/*
Thin helpers mirroring modelyard.runtimes.kubernetes.objects: labels, DNS names and
Kubernetes quantities. The renderer (render_platform) is the reference; a test renders
this chart with Helm's engine and compares every object with it.
*/}}

{{/* The labels of every object: labels(component) in objects.py. */}}
{{- define "modelyard.labels" -}}
app.kubernetes.io/name: modelyard
app.kubernetes.io/component: {{ . }}
app.kubernetes.io/managed-by: modelyard
{{- end -}}

{{/* name(*parts): parts joined by "-", cut to 63 characters with a hash when longer. */}}
{{- define "modelyard.name" -}}
{{- $joined := join "-" . -}}
{{- if le (len $joined) 63 -}}
{{- $joined -}}
{{- else -}}
{{- printf "%s-%s" (regexReplaceAll "-+$" (trunc 54 $joined) "") (trunc 8 (sha256sum $joined)) -}}
{{- end -}}
{{- end -}}

{{/* quantity_cpu: cores as "2" or "250m"; a quantity string passes through. */}}
{{- define "modelyard.cpu" -}}
{{- if kindIs "string" . -}}
{{- . -}}
{{- else -}}
{{- $m := round (mulf . 1000) 0 | int64 -}}
{{- if eq (mod $m 1000) 0 -}}{{ div $m 1000 }}{{- else -}}{{ $m }}m{{- end -}}
{{- end -}}
{{- end -}}

{{/* quantity_memory: bytes as Gi, Mi or Ki when whole; a quantity string passes through. */}}
{{- define "modelyard.memory" -}}
{{- if kindIs "string" . -}}
{{- . -}}
{{- else -}}
{{- $b := . | int64 -}}
{{- if eq (mod $b 1073741824) 0 -}}{{ div $b 1073741824 }}Gi
{{- else if eq (mod $b 1048576) 0 -}}{{ div $b 1048576 }}Mi
{{- else if eq (mod $b 1024) 0 -}}{{ div $b 1024 }}Ki
{{- else -}}{{ $b }}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The environment of the API, controllers and migrations: platform_env(). */}}
{{- define "modelyard.env" -}}
{{- $v := .Values -}}
{{- $art := $v.workloads.artifacts -}}
{{- $env := dict "MODELYARD_HOME" "/var/lib/modelyard" "MODELYARD_LOG_JSON" "true" "MODELYARD_LOG_LEVEL" $v.logLevel "MODELYARD_ARTIFACTS_URL" $art.url -}}
{{- if and $art.s3_endpoint (not $art.pvc) -}}{{- $_ := set $env "AWS_ENDPOINT_URL" $art.s3_endpoint -}}{{- end -}}
{{- if $v.ingress.enabled -}}{{- $_ := set $env "MODELYARD_TRUST_FORWARDED_FOR" "true" -}}{{- end -}}
{{- if $v.workloads.tracking_uri -}}{{- $_ := set $env "MLFLOW_TRACKING_URI" $v.workloads.tracking_uri -}}{{- end -}}
{{- with $v.oidc -}}
{{- if .issuer -}}
{{- $_ := set $env "MODELYARD_OIDC_ISSUER" .issuer -}}
{{- $_ := set $env "MODELYARD_OIDC_USERNAME_CLAIM" .usernameClaim -}}
{{- $_ := set $env "MODELYARD_OIDC_GROUPS_CLAIM" .groupsClaim -}}
{{- if .audience -}}{{- $_ := set $env "MODELYARD_OIDC_AUDIENCE" .audience -}}{{- end -}}
{{- if .jwksUrl -}}{{- $_ := set $env "MODELYARD_OIDC_JWKS_URL" .jwksUrl -}}{{- end -}}
{{- if .groupPattern -}}{{- $_ := set $env "MODELYARD_OIDC_GROUP_PATTERN" .groupPattern -}}{{- end -}}
{{- if .roleMappings -}}{{- $_ := set $env "MODELYARD_OIDC_ROLE_MAPPINGS" (toJson .roleMappings) -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- range $key := keys $env | sortAlpha }}
- name: {{ $key }}
  value: {{ get $env $key | quote }}
{{- end }}
{{- if and $art.credentials_secret (not $art.pvc) }}
{{- range $key := list "AWS_ACCESS_KEY_ID" "AWS_SECRET_ACCESS_KEY" }}
- name: {{ $key }}
  valueFrom:
    secretKeyRef:
      name: {{ $art.credentials_secret | quote }}
      key: {{ $key }}
{{- end }}
{{- end }}
- name: MODELYARD_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $v.database.existingSecret | quote }}
      key: {{ $v.database.key | quote }}
- name: MODELYARD_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $v.secretKey.existingSecret | quote }}
      key: {{ $v.secretKey.key | quote }}
{{- end -}}

{{/* The security contexts every platform container and pod runs with. */}}
{{- define "modelyard.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
{{- end -}}

{{- define "modelyard.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "modelyard.volumeMounts" -}}
- name: home
  mountPath: /var/lib/modelyard
- name: tmp
  mountPath: /tmp
{{- with .Values.workloads.artifacts }}{{ if .pvc }}
- name: artifacts
  mountPath: {{ .mount_path | quote }}
{{- end }}{{ end }}
{{- end -}}

{{- define "modelyard.volumes" -}}
- name: home
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- with .Values.workloads.artifacts }}{{ if .pvc }}
- name: artifacts
  persistentVolumeClaim:
    claimName: {{ .pvc | quote }}
{{- end }}{{ end }}
{{- end -}}

{{- define "modelyard.pullSecrets" -}}
{{- with . }}
imagePullSecrets:
{{- range . }}
  - name: {{ . | quote }}
{{- end }}
{{- end }}
{{- end -}}
