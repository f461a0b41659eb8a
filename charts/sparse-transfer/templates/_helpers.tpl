{{/* Names, labels and the few derived settings every template shares. */}}

{{- define "sparse-transfer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sparse-transfer.fullname" -}}
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

{{- define "sparse-transfer.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "sparse-transfer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "sparse-transfer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sparse-transfer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The one image reference used by every container of ours. */}}
{{- define "sparse-transfer.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if hasPrefix "@" $tag }}
{{- printf "%s%s" .Values.image.repository $tag }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "sparse-transfer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sparse-transfer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sparse-transfer.kfpNamespace" -}}
{{- default .Release.Namespace .Values.kfp.namespace }}
{{- end }}

{{/* The Secret holding S3 credentials (created here or the user's). */}}
{{- define "sparse-transfer.s3SecretName" -}}
{{- default .Values.s3.secretName .Values.s3.existingSecret }}
{{- end }}

{{- define "sparse-transfer.minioName" -}}
{{- printf "%s-minio" (include "sparse-transfer.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* host:port of the object store, as the KFP launcher wants it (no scheme). */}}
{{- define "sparse-transfer.s3Endpoint" -}}
{{- if .Values.minio.enabled }}
{{- printf "%s.%s.svc:9000" (include "sparse-transfer.minioName" .) .Release.Namespace }}
{{- else }}
{{- $endpoint := .Values.s3.endpoint | trimPrefix "https://" | trimPrefix "http://" | trimSuffix "/" }}
{{- /* AWS: the global endpoint answers path-style requests for us-east-1 buckets only; others
get a 301 to the regional endpoint, which the launcher and boto3 do not follow. */}}
{{- if and (eq $endpoint "s3.amazonaws.com") (ne .Values.s3.region "us-east-1") }}
{{- printf "s3.%s.amazonaws.com" .Values.s3.region }}
{{- else }}
{{- $endpoint }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sparse-transfer.s3DisableSSL" -}}
{{- if .Values.minio.enabled }}true{{ else if hasPrefix "http://" .Values.s3.endpoint }}true{{ else }}{{ .Values.s3.disableSSL }}{{ end }}
{{- end }}

{{/* A full URL for boto3 (AWS_ENDPOINT_URL). */}}
{{- define "sparse-transfer.s3EndpointURL" -}}
{{- $scheme := ternary "http" "https" (eq (include "sparse-transfer.s3DisableSSL" .) "true") }}
{{- printf "%s://%s" $scheme (include "sparse-transfer.s3Endpoint" .) }}
{{- end }}

{{/* The zoo root: one value for the steps (settings ConfigMap) and the chart's predictor. */}}
{{- define "sparse-transfer.zooRoot" -}}
{{- default (printf "s3://%s/zoo" .Values.s3.bucket) .Values.zooRoot | trimSuffix "/" }}
{{- end }}

{{/* The ConfigMap the compiled steps read their settings from (kfp-kubernetes configMapAsEnv). */}}
{{- define "sparse-transfer.stepsConfigMapName" -}}
{{- regexFind "configMapName: \\S+" (.Files.Get "files/sparse_transfer_pipeline.yaml") | trimPrefix "configMapName: " }}
{{- end }}

{{- define "sparse-transfer.pipelineRoot" -}}
{{- default (printf "s3://%s/pipeline-root" .Values.s3.bucket) .Values.pipelineRoot }}
{{- end }}

{{/*
The `providers` entry the KFP launcher needs to write our pipeline root: an S3 override scoped to
its bucket and prefix, credentials from our Secret (backend/src/v2/config/s3.go S3Override). The
KFP UI server reads the Markdown report with the same entry (frontend/server/minio-helper.ts
parseS3ProviderInfo reads that Secret in the run's namespace).
*/}}
{{- define "sparse-transfer.launcherOverride" -}}
{{- $root := include "sparse-transfer.pipelineRoot" . | trimPrefix "s3://" | trimPrefix "minio://" }}
{{- $parts := splitn "/" 2 $root }}
bucketName: {{ $parts._0 | quote }}
keyPrefix: {{ default "" $parts._1 | quote }}
endpoint: {{ include "sparse-transfer.s3Endpoint" . | quote }}
region: {{ .Values.s3.region | quote }}
disableSSL: {{ include "sparse-transfer.s3DisableSSL" . }}
forcePathStyle: {{ .Values.s3.forcePathStyle }}
credentials:
  fromEnv: false
  secretRef:
    secretName: {{ include "sparse-transfer.s3SecretName" . | quote }}
    accessKeyKey: {{ .Values.s3.accessKeyKey | quote }}
    secretKeyKey: {{ .Values.s3.secretKeyKey | quote }}
{{- end }}

{{/*
The compiled spec with every step's image set to this chart's image: the copy in files/ is
compiled with the project's default image, a user's registry is only known here.
*/}}
{{- define "sparse-transfer.pipelineSpec" -}}
{{- $spec := .Files.Get "files/sparse_transfer_pipeline.yaml" }}
{{- regexReplaceAll "(?m)^(\\s+image: ).*$" $spec (printf "${1}%s" (include "sparse-transfer.image" .)) }}
{{- end }}

{{/* The Secret the compiled steps read S3 settings from (kfp-kubernetes secretAsEnv). */}}
{{- define "sparse-transfer.stepsSecretName" -}}
{{- regexFind "secretName: \\S+" (.Files.Get "files/sparse_transfer_pipeline.yaml") | trimPrefix "secretName: " }}
{{- end }}

{{/* A new KFP pipeline version per spec change and per upgrade. */}}
{{- define "sparse-transfer.versionName" -}}
{{- if .Values.kfp.versionName }}
{{- .Values.kfp.versionName }}
{{- else }}
{{- $sha := include "sparse-transfer.pipelineSpec" . | sha256sum | trunc 10 }}
{{- printf "%s-%s-r%d" .Chart.AppVersion $sha (int .Release.Revision) }}
{{- end }}
{{- end }}

{{/* Env for boto3 and our CLI: endpoint, region, bucket and the keys from the Secret. */}}
{{- define "sparse-transfer.s3Env" -}}
- name: AWS_ENDPOINT_URL
  value: {{ include "sparse-transfer.s3EndpointURL" . | quote }}
- name: AWS_DEFAULT_REGION
  value: {{ .Values.s3.region | quote }}
- name: S3_BUCKET
  value: {{ .Values.s3.bucket | quote }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "sparse-transfer.s3SecretName" . }}
      key: {{ .Values.s3.accessKeyKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "sparse-transfer.s3SecretName" . }}
      key: {{ .Values.s3.secretKeyKey }}
{{- end }}

{{/* KFP API settings and the token file the CLI (kfp.Client) reads. */}}
{{- define "sparse-transfer.kfpEnv" -}}
- name: KFP_HOST
  value: {{ .Values.kfp.host | quote }}
- name: KFP_NAMESPACE
  value: {{ .Values.kfp.namespace | quote }}
{{- if or .Values.kfp.auth.existingTokenSecret .Values.kfp.auth.serviceAccountToken }}
- name: KF_PIPELINES_SA_TOKEN_PATH
  value: /var/run/secrets/kubeflow/pipelines/token
{{- end }}
{{- end }}

{{- define "sparse-transfer.tokenVolume" -}}
{{- if .Values.kfp.auth.existingTokenSecret }}
- name: kfp-token
  secret:
    secretName: {{ .Values.kfp.auth.existingTokenSecret }}
    items:
      - key: {{ .Values.kfp.auth.tokenKey }}
        path: token
{{- else if .Values.kfp.auth.serviceAccountToken }}
- name: kfp-token
  projected:
    sources:
      - serviceAccountToken:
          path: token
          audience: {{ .Values.kfp.auth.audience }}
          expirationSeconds: 7200
{{- end }}
{{- end }}

{{- define "sparse-transfer.tokenMount" -}}
{{- if or .Values.kfp.auth.existingTokenSecret .Values.kfp.auth.serviceAccountToken }}
- name: kfp-token
  mountPath: /var/run/secrets/kubeflow/pipelines
  readOnly: true
{{- end }}
{{- end }}

{{- define "sparse-transfer.podPlacement" -}}
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
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The mark on this release's recurring runs (`pipeline schedule --owner`). */}}
{{- define "sparse-transfer.scheduleOwner" -}}
{{- printf "helm/%s/%s" .Release.Namespace .Release.Name }}
{{- end }}
