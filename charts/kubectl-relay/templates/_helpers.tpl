{{/*
Name of every object of the release: "<release>-operator", unless
fullnameOverride says otherwise. DNS labels are at most 63 characters.
*/}}
{{- define "kubectl-relay.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
Labels that select the operator's pod. "component: operator" keeps them
apart from the relay pods, which share app.kubernetes.io/name.
*/}}
{{- define "kubectl-relay.selectorLabels" -}}
app.kubernetes.io/name: kubectl-relay
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/*
Labels of every object. No "managed-by: Helm": manifests/ is rendered from
this chart and applied with kubectl, and must not claim otherwise.
*/}}
{{- define "kubectl-relay.labels" -}}
{{ include "kubectl-relay.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: kubectl-relay
{{- end -}}

{{- define "kubectl-relay.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kubectl-relay.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The operator's image; relay pods default to the same one. */}}
{{- define "kubectl-relay.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The ConfigMap that lists the watched namespaces (see configmap.yaml). */}}
{{- define "kubectl-relay.namespacesConfigMap" -}}
{{- printf "%s-namespaces" (include "kubectl-relay.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The operator's permissions, the same for the ClusterRole and each Role.
Least privilege: exactly what the handlers do, and why.
*/}}
{{- define "kubectl-relay.rules" -}}
# Watch tunnels; keep kopf's finalizer and bookkeeping annotations on them;
# delete a tunnel whose ttl has passed.
- apiGroups: [relay.kubectl-relay.io]
  resources: [socattunnels]
  verbs: [get, list, watch, patch, delete]
- apiGroups: [relay.kubectl-relay.io]
  resources: [socattunnels/status]
  verbs: [patch]
# Owner references with blockOwnerDeletion need this where the
# OwnerReferencesPermissionEnforcement admission plugin is on.
- apiGroups: [relay.kubectl-relay.io]
  resources: [socattunnels/finalizers]
  verbs: [update]
# The relay pods. Watched for the ready count in the status; never deleted
# by the operator (garbage collection follows the owner reference, and an
# invalid change keeps the last good Deployment running).
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
# Watched for the load balancer's address; deleted when spec.service goes.
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch, delete]
# Deleted when spec.allowedSources empties.
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, create, patch, delete]
# Only "get": to check that a Secret named in spec.tls exists and has its
# keys before creating anything. No list or watch, so the operator cannot
# enumerate Secrets.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# kopf reports handler outcomes, and the handlers bad specs, as events.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- if .Values.peering.enabled }}
{{- $peerings := ternary "kopfpeerings" "clusterkopfpeerings" (not (empty .Values.watchNamespaces)) }}
# kopf peering between the replicas: watch the peering object, and
# merge-patch this replica's keep-alive into it. Only the release's own
# object may be patched; the chart creates it (templates/peering.yaml).
- apiGroups: [kopf.dev]
  resources: [{{ $peerings }}]
  verbs: [list, watch]
- apiGroups: [kopf.dev]
  resources: [{{ $peerings }}]
  resourceNames: [{{ include "kubectl-relay.fullname" . }}]
  verbs: [patch]
{{- end }}
{{- end -}}
