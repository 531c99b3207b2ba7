"""The Kubernetes e2e suite runs against the single-node cluster ``./test_env.sh --kubernetes``
brings up (``testkit.cluster``): real etcd, API server, scheduler, kubelet, containerd, CNI,
kube-proxy, CoreDNS, Traefik and kube-router, and the chart installed by helm.  The tests reach
the sandbox at the URLs a user on the machine would use (the ingress), and the cluster through its
admin kubeconfig.

Without such a cluster the tests skip and say why, unless ``SANDBOX_REQUIRE_K8S=1``: then that is
a failure, so CI cannot pass by skipping.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from testkit.cluster.cluster import RELEASE_NAMESPACE, Cluster

SESSION_NS = "e2e"  # owned by the gateway tenant "e2e" (ci/local-cluster-values.yaml)
KERNEL_NS = f"{RELEASE_NAMESPACE}-kernels"
PREFIX = "sandbox-mini-jupyter-sandbox"


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    found = Cluster()
    if not found.is_up():
        reason = f"no cluster is up (state: {found.state}); ./test_env.sh --kubernetes starts one"
        if os.environ.get("SANDBOX_REQUIRE_K8S") == "1":
            pytest.fail(f"SANDBOX_REQUIRE_K8S=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    if not found.kubectl("get", "namespace", SESSION_NS, check=False):
        found.kubectl("create", "namespace", SESSION_NS)
    return found


@pytest.fixture(scope="session")
def exports(cluster: Cluster) -> dict[str, str]:
    """What ``./test_env.sh --kubernetes`` printed: the URLs and tokens a user is given."""
    return cluster.exports()


def get(cluster: Cluster, *args: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(cluster.kubectl("get", *args, "-o", "json"))
    return loaded


def service_ip(cluster: Cluster, name: str, namespace: str = RELEASE_NAMESPACE) -> str:
    ip: str = get(cluster, "service", name, "-n", namespace)["spec"]["clusterIP"]
    return ip


def kernel_pods(cluster: Cluster, selector: str) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = get(cluster, "pods", "-n", KERNEL_NS, "-l", selector)["items"]
    return pods


def wait_for(what: str, check: Any, timeout: float, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def session_status(cluster: Cluster, name: str) -> dict[str, Any]:
    found = get(cluster, "sandboxsession", name, "-n", SESSION_NS)
    status: dict[str, Any] = found.get("status", {})
    return status


def wait_phase(cluster: Cluster, name: str, phases: set[str], timeout: float = 180) -> dict:
    last: dict[str, Any] = {}

    def reached() -> bool:
        nonlocal last
        last = session_status(cluster, name)
        return last.get("phase") in phases

    try:
        wait_for(f"session {name} to reach {phases}", reached, timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last status {last}") from None
    return last


def session_manifest(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "minisandbox.dev/v1alpha1",
        "kind": "SandboxSession",
        "metadata": {"name": name, "namespace": SESSION_NS},
        "spec": {"kernelName": "python3", **spec},
    }


def delete_session(cluster: Cluster, name: str) -> None:
    cluster.kubectl(
        "delete", "sandboxsession", name, "-n", SESSION_NS, "--ignore-not-found",
        "--wait=true", "--timeout=120s",
    )  # fmt: skip


@contextlib.contextmanager
def ready_session(cluster: Cluster, prefix: str, **spec: Any) -> Iterator[dict[str, Any]]:
    """A Ready SandboxSession's status (with its name); deleted afterwards."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    cluster.apply([session_manifest(name, **spec)])
    try:
        status = wait_phase(cluster, name, {"Ready", "Failed"}, timeout=240)
        assert status["phase"] == "Ready", status
        yield {**status, "name": name}
    finally:
        delete_session(cluster, name)


def gateway_pod(cluster: Cluster) -> dict[str, Any]:
    selector = "app.kubernetes.io/component=gateway"
    pods = get(cluster, "pods", "-n", RELEASE_NAMESPACE, "-l", selector)["items"]
    running = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert len(running) == 1, [p["metadata"]["name"] for p in pods]
    pod: dict[str, Any] = running[0]
    return pod


def gateway_metrics(cluster: Cluster, token: str) -> str:
    """The gateway's /metrics, read inside its pod (the port is closed to everyone else)."""
    pod = gateway_pod(cluster)
    port = next(
        p["containerPort"] for p in pod["spec"]["containers"][0]["ports"] if p["name"] == "metrics"
    )
    code = (
        "import sys, urllib.request\n"
        f"r = urllib.request.Request('http://127.0.0.1:{port}/metrics',"
        " headers={'Authorization': 'token ' + sys.stdin.read().strip()})\n"
        "print(urllib.request.urlopen(r, timeout=10).read().decode())\n"
    )
    return cluster.kubectl(
        "exec", "-i", "-n", RELEASE_NAMESPACE, pod["metadata"]["name"], "--",
        "python", "-c", code, input=token,
    )  # fmt: skip


def starts(metrics: str, source: str) -> float:
    """``sandbox_kernel_starts_total`` of python3 for ``source`` (warm or cold)."""
    total = 0.0
    for line in metrics.splitlines():
        wanted = f'source="{source}"' in line and 'kernelspec="python3"' in line
        if line.startswith("sandbox_kernel_starts_total{") and wanted:
            total += float(line.rpartition(" ")[2])
    return total
