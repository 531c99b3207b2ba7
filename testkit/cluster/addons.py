"""What a cluster runs besides its own processes: cluster DNS and an ingress controller, each a
Deployment of an image built here FROM scratch around one binary compiled from its Go module.

Both run as non-root users with read-only root filesystems and no capabilities; neither image is
ever pulled (``imagePullPolicy: Never``).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from testkit.cluster.node import DNS_SERVICE_IP

DNS_IMAGE = "mini-jupyter-sandbox/coredns:local"
INGRESS_IMAGE = "mini-jupyter-sandbox/traefik:local"
INGRESS_NAMESPACE = "ingress"
INGRESS_CLASS = "traefik"
# Host ports of the ingress controller, on loopback: one entry point per exposed service, so
# that each is reachable at its own URL without host names a machine cannot resolve.
ENTRY_POINTS = {"gateway": 30080, "notebook": 30088, "fileserver": 30081}

Manifest = dict[str, Any]


def scratch_image(tag: str, binary: Path, user: str) -> None:
    """``docker build`` of an image holding only ``binary`` (at /<name>), run as ``user``."""
    with tempfile.TemporaryDirectory() as context:
        shutil.copy2(binary, Path(context) / binary.name)
        (Path(context) / "Dockerfile").write_text(
            f"FROM scratch\nCOPY {binary.name} /{binary.name}\nUSER {user}\n"
            f'ENTRYPOINT ["/{binary.name}"]\n'
        )
        subprocess.run(
            ["docker", "build", "-q", "-t", tag, context], check=True, stdout=subprocess.DEVNULL
        )


def _restricted_container(name: str, image: str, args: list[str]) -> Manifest:
    return {
        "name": name,
        "image": f"docker.io/{image}",
        "imagePullPolicy": "Never",
        "args": args,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def _pod_security(uid: int) -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def dns() -> list[Manifest]:
    """CoreDNS serving cluster.local from the API, forwarding other names to the node's resolver."""
    labels = {"k8s-app": "kube-dns"}
    corefile = (
        ".:53 {\n    errors\n    health :8080\n    ready :8181\n"
        "    kubernetes cluster.local in-addr.arpa ip6.arpa {\n"
        "        pods insecure\n        fallthrough in-addr.arpa ip6.arpa\n        ttl 30\n    }\n"
        "    forward . /etc/resolv.conf\n    cache 30\n    loop\n    loadbalance\n}\n"
    )
    container = _restricted_container("coredns", DNS_IMAGE, ["-conf", "/etc/coredns/Corefile"])
    container |= {
        "ports": [
            {"containerPort": 53, "name": "dns", "protocol": "UDP"},
            {"containerPort": 53, "name": "dns-tcp", "protocol": "TCP"},
        ],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "170Mi"}},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 2},
        "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}},
    }
    meta = {"name": "coredns", "namespace": "kube-system"}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        _binding("system:coredns", "coredns", "kube-system"),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"Corefile": corefile}},
        _deployment(
            meta,
            labels,
            {
                "serviceAccountName": "coredns",
                "dnsPolicy": "Default",
                "priorityClassName": "system-cluster-critical",
                "securityContext": _pod_security(65532),
                "containers": [container],
                "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
            },
        ),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
            "spec": {
                "clusterIP": DNS_SERVICE_IP,
                "selector": labels,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                ],
            },
        },
    ]


def ingress() -> list[Manifest]:
    """Traefik as the cluster's default IngressClass, its entry points on loopback host ports."""
    labels = {"app.kubernetes.io/name": "traefik"}
    meta = {"name": "traefik", "namespace": INGRESS_NAMESPACE}
    args = [
        "--providers.kubernetesingress=true",
        f"--providers.kubernetesingress.ingressclass={INGRESS_CLASS}",
        "--ping=true",
        "--ping.entrypoint=ping",
        "--entrypoints.ping.address=:9000",
        "--log.level=INFO",
        # No calls home: this cluster reaches no network beyond the machine.
        "--global.checknewversion=false",
        "--global.sendanonymoususage=false",
    ]
    ports = [{"name": "ping", "containerPort": 9000}]
    for name, port in ENTRY_POINTS.items():
        # An upgraded websocket (a kernel's channels) has no entry point deadline: none to set.
        args.append(f"--entrypoints.{name}.address=:{port}")
        ports.append(
            {"name": name[:15], "containerPort": port, "hostPort": port, "hostIP": "127.0.0.1"}
        )
    container = _restricted_container("traefik", INGRESS_IMAGE, args)
    container |= {
        "ports": ports,
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "readinessProbe": {"httpGet": {"path": "/ping", "port": 9000}, "periodSeconds": 2},
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": INGRESS_NAMESPACE,
                # hostPort is "baseline"-forbidden; the controller itself stays restricted-shaped.
                "labels": {"pod-security.kubernetes.io/enforce": "privileged"},
            },
        },
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "traefik"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["services", "secrets", "nodes"],
                    "verbs": ["get", "list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["networking.k8s.io"],
                    "resources": ["ingresses", "ingressclasses"],
                    "verbs": ["get", "list", "watch"],
                },
                {
                    "apiGroups": ["networking.k8s.io"],
                    "resources": ["ingresses/status"],
                    "verbs": ["update"],
                },
            ],
        },
        _binding("traefik", "traefik", INGRESS_NAMESPACE),
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": {
                "name": INGRESS_CLASS,
                "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"},
            },
            "spec": {"controller": "traefik.io/ingress-controller"},
        },
        _deployment(
            meta,
            labels,
            {
                "serviceAccountName": "traefik",
                "securityContext": _pod_security(65532),
                "containers": [container],
            },
        ),
    ]


def _binding(role: str, account: str, namespace: str) -> Manifest:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": role},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }


def _deployment(meta: Manifest, labels: dict[str, str], pod: Manifest) -> Manifest:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {**meta, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }
