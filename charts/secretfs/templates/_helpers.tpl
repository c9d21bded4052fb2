{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "secretfs.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped name of every namespaced object and cluster object. */}}
{{- define "secretfs.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "secretfs.selectorLabels" -}}
app.kubernetes.io/name: {{ include "secretfs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "secretfs.labels" -}}
{{ include "secretfs.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: secretfs
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "secretfs.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "secretfs.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository[:tag][@digest] from an image dict; tag defaults to the second argument. */}}
{{- define "secretfs.image" -}}
{{- $image := index . 0 -}}
{{- $defaultTag := index . 1 -}}
{{- $tag := default $defaultTag $image.tag -}}
{{- $image.repository -}}
{{- if $tag }}:{{ $tag }}{{ end -}}
{{- if $image.digest }}@{{ $image.digest }}{{ end -}}
{{- end -}}

{{/* kubeletRootDir without a trailing slash. */}}
{{- define "secretfs.kubeletDir" -}}
{{- .Values.kubeletRootDir | trimSuffix "/" -}}
{{- end -}}

{{/*
Directory of the driver's CSI socket (and restart-survival state) on the
host: upstream's `plugins/csi-secrets-store` for upstream's driver name, so
secretfs replaces the upstream driver in place; `plugins/<driverName>` for
any other name, so a second driver next to upstream's never shares (and
overwrites) its csi.sock.
*/}}
{{- define "secretfs.pluginDir" -}}
{{- $dir := ternary "csi-secrets-store" .Values.driverName (eq .Values.driverName "secrets-store.csi.k8s.io") -}}
{{- printf "%s/plugins/%s" (include "secretfs.kubeletDir" .) $dir -}}
{{- end -}}

{{/* Name of the keeper DaemonSet: <fullname>-keeper, within 63 characters. */}}
{{- define "secretfs.keeperFullname" -}}
{{- printf "%s-keeper" (include "secretfs.fullname" . | trunc 56 | trimSuffix "-") -}}
{{- end -}}

{{/*
Host directory of the keeper's socket, next to the plugin directory rather
than in it: the keeper needs its socket only, not the CSI socket or the
node plugin's state records.
*/}}
{{- define "secretfs.keeperDir" -}}
{{- printf "%s-keeper" (include "secretfs.pluginDir" .) -}}
{{- end -}}

{{/*
Selector labels of the keeper pods. Their app.kubernetes.io/name differs
from the node plugin's: the node DaemonSet selects on name and instance only
(an immutable selector), so keeper pods sharing both would be claimed by it.
*/}}
{{- define "secretfs.keeperSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-keeper" (include "secretfs.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: keeper
{{- end -}}

{{- define "secretfs.keeperLabels" -}}
{{ include "secretfs.keeperSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: secretfs
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}
