{{/*
Names, labels, images and the security settings every pod shares. Templates never spell a
resource name themselves: they ask for it here, so renames stay consistent.
*/}}

{{- define "mjs.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Prefix of every object name; kept <= 40 characters so "<prefix>-<component>" fits 63. */}}
{{- define "mjs.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of one component's objects: (dict "root" $ "component" "gateway"). */}}
{{- define "mjs.componentName" -}}
{{- printf "%s-%s" (include "mjs.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mjs.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select a component's pods; stable across upgrades. */}}
{{- define "mjs.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mjs.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Full label set of an object: (dict "root" $ "component" "gateway"). */}}
{{- define "mjs.labels" -}}
helm.sh/chart: {{ include "mjs.chart" .root }}
{{ include "mjs.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: {{ include "mjs.name" .root }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* "repository:tag", the tag defaulting to the chart's appVersion: (dict "root" $ "image" .Values.x.image). */}}
{{- define "mjs.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* Namespace the kernels run in. */}}
{{- define "mjs.kernelNamespace" -}}
{{- default (printf "%s-kernels" .Release.Namespace) .Values.kernels.namespace.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* In-cluster base URL of the gateway Service. */}}
{{/*
SANDBOX_ALLOWED_HOSTS of a component, (dict "root" $ "component" "gateway"): the names its
Service answers to in the cluster, its ingress host and .Values.allowedHosts.  A request for any
other name (DNS rebinding) is refused with 421; loopback and the pod's own address (kubelet
probes, scrapes of the pod IP) always pass, other IP addresses only when listed.
*/}}
{{- define "mjs.allowedHosts" -}}
{{- $name := include "mjs.componentName" . -}}
{{- $ns := .root.Release.Namespace -}}
{{- $hosts := list $name (printf "%s.%s" $name $ns) (printf "%s.%s.svc" $name $ns) (printf "%s.%s.svc.cluster.local" $name $ns) -}}
{{- $rule := index .root.Values.ingress .component -}}
{{- if and .root.Values.ingress.enabled $rule.enabled $rule.host -}}
{{- $hosts = append $hosts $rule.host -}}
{{- end -}}
{{- join "," (concat $hosts .root.Values.allowedHosts) -}}
{{- end -}}

{{- define "mjs.gatewayUrl" -}}
{{- printf "http://%s.%s.svc:%d" (include "mjs.componentName" (dict "root" . "component" "gateway")) .Release.Namespace (int .Values.gateway.port) -}}
{{- end -}}

{{/*
Pod security context of every pod, kernels included (the kernel pod template renders the same
keys by hand): never root, the runtime's default seccomp profile.
*/}}
{{- define "mjs.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container security context of every container: no capabilities, no privilege gain, read-only root. */}}
{{- define "mjs.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* imagePullSecrets stanza of a pod spec. */}}
{{- define "mjs.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
A token, generated once and kept: the value given in values wins; otherwise the one already
stored in the release's Secret (lookup, so upgrades do not rotate it and break clients);
otherwise a fresh random one (first install, or an offline render where lookup returns nothing).
Call with (dict "root" $ "secretName" "..." "key" "token" "given" .Values.x.auth.token).
*/}}
{{- define "mjs.token" -}}
{{- if .given -}}
{{- .given -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secretName -}}
{{- $data := dict -}}
{{- if $existing -}}{{- $data = $existing.data | default dict -}}{{- end -}}
{{- if hasKey $data .key -}}
{{- index $data .key | b64dec -}}
{{- else -}}
{{- randAlphaNum 48 -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The gateway's tenants as JSON, name -> {token?, maxKernels?, delegate?, metrics?}: those of
gateway.auth.tenants plus the release's own ("notebook", "controller" as a delegate,
"prometheus" with the metrics right) for the components deployed.  Call with the root context.
*/}}
{{- define "mjs.gatewayTenants" -}}
{{- $tenants := dict -}}
{{- range $name, $tenant := .Values.gateway.auth.tenants -}}
{{- $_ := set $tenants $name (deepCopy ($tenant | default dict)) -}}
{{- end -}}
{{- $own := dict -}}
{{- if .Values.notebook.enabled -}}{{- $_ := set $own "notebook" (dict) -}}{{- end -}}
{{- if .Values.controller.enabled -}}{{- $_ := set $own "controller" (dict "delegate" true) -}}{{- end -}}
{{- if .Values.gateway.serviceMonitor.enabled -}}{{- $_ := set $own "prometheus" (dict "metrics" true) -}}{{- end -}}
{{- range $name, $rights := $own -}}
{{- $_ := set $tenants $name (merge $rights (index $tenants $name | default dict)) -}}
{{- end -}}
{{- toJson $tenants -}}
{{- end -}}

{{/* A gateway tenant's token, as a secretKeyRef: (dict "root" $ "tenant" "notebook"). */}}
{{- define "mjs.gatewayTenantTokenRef" -}}
secretKeyRef:
  name: {{ include "mjs.tokenSecretName" (dict "root" .root "component" "gateway" "auth" .root.Values.gateway.auth) }}
  key: {{ .tenant }}
{{- end -}}

{{/* Name of the Secret holding a component's token: (dict "root" $ "component" "gateway" "auth" .Values.gateway.auth). */}}
{{- define "mjs.tokenSecretName" -}}
{{- if .auth.existingSecret -}}
{{- .auth.existingSecret -}}
{{- else -}}
{{- printf "%s-token" (include "mjs.componentName" (dict "root" .root "component" .component)) -}}
{{- end -}}
{{- end -}}

{{/* Key of the token inside that Secret. */}}
{{- define "mjs.tokenSecretKey" -}}
{{- if .auth.existingSecret -}}{{- .auth.existingSecretKey -}}{{- else -}}token{{- end -}}
{{- end -}}

{{/* Name of the shared-volume claim in a namespace: (dict "root" $ "scope" "release"|"kernels"). */}}
{{- define "mjs.sharedClaimName" -}}
{{- if eq .root.Values.sharedVolume.backend "dynamic" -}}
{{- include "mjs.componentName" (dict "root" .root "component" "shared") -}}
{{- else -}}
{{- printf "%s-%s" (include "mjs.componentName" (dict "root" .root "component" "shared")) .scope -}}
{{- end -}}
{{- end -}}

{{/* Selector labels of the gateway pods, used by NetworkPolicies in both namespaces. */}}
{{- define "mjs.gatewaySelector" -}}
{{ include "mjs.selectorLabels" (dict "root" . "component" "gateway") }}
{{- end -}}

{{/* Labels carried by every kernel pod (the kernel pod template writes them). */}}
{{- define "mjs.kernelLabels" -}}
{{ include "mjs.selectorLabels" (dict "root" . "component" "kernel") }}
{{- end -}}

{{/*
One component's Ingress: (dict "root" $ "component" "gateway" "rule" .Values.ingress.gateway).
Shared by the three components so class, annotations and TLS are handled in one place.
*/}}
{{- define "mjs.ingress" -}}
{{- $root := .root -}}
{{- $c := dict "root" $root "component" .component -}}
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {{ include "mjs.componentName" $c }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "mjs.labels" $c | nindent 4 }}
  {{- with merge (deepCopy (.rule.annotations | default dict)) $root.Values.ingress.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- with $root.Values.ingress.className }}
  ingressClassName: {{ . }}
  {{- end }}
  {{- if $root.Values.ingress.tls.secretName }}
  tls:
    - secretName: {{ $root.Values.ingress.tls.secretName }}
      {{- with .rule.host }}
      hosts:
        - {{ . | quote }}
      {{- end }}
  {{- end }}
  rules:
    - {{- with .rule.host }}
      host: {{ . | quote }}
      {{- end }}
      http:
        paths:
          - path: {{ .rule.path }}
            pathType: Prefix
            backend:
              service:
                name: {{ include "mjs.componentName" $c }}
                port:
                  name: http
{{- end -}}

{{/*
A component's token Secret, unless an existing one is used:
(dict "root" $ "component" "fileserver" "auth" .Values.fileserver.auth).
*/}}
{{- define "mjs.tokenSecret" -}}
{{- if not .auth.existingSecret -}}
{{- $name := include "mjs.tokenSecretName" . -}}
apiVersion: v1
kind: Secret
metadata:
  name: {{ $name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "mjs.labels" . | nindent 4 }}
type: Opaque
data:
  token: {{ include "mjs.token" (dict "root" .root "secretName" $name "key" "token" "given" .auth.token) | b64enc | quote }}
{{- end -}}
{{- end -}}

{{/*
Egress allow-lists are on when the operator's ceiling (kernels.egress.allow) names anything: then
the egress process runs, and every kernel's DNS and proxy is it. Prints "true" or nothing.
*/}}
{{- define "mjs.egressEnabled" -}}
{{- if .Values.kernels.egress.allow }}true{{ end -}}
{{- end -}}

{{/*
The TCP ports the ceiling names, as a JSON list: 80 and 443 for an entry without a port, else
its own (the egress process listens on each; plain HTTP is 80 only).
*/}}
{{- define "mjs.egressPorts" -}}
{{- $ports := list 80 443 }}
{{- range .Values.kernels.egress.allow }}
{{- $parts := splitList ":" . }}
{{- if eq (len $parts) 2 }}
{{- $ports = append $ports (last $parts | int) }}
{{- end }}
{{- end }}
{{- $ports | uniq | sortAlpha | toJson -}}
{{- end -}}

{{/* The egress Service's name as a kernel's launcher and the gateway resolve it. */}}
{{- define "mjs.egressHost" -}}
{{ include "mjs.componentName" (dict "root" . "component" "egress") }}.{{ .Release.Namespace }}.svc
{{- end -}}
