"""SandboxSessions on a real cluster, as a user meets them after ``helm install``: the API
server's validation, Pod Security "restricted" with the LimitRange and quota, the controller in
the cluster reconciling to Ready with a warm or a cold kernel pod, code through the client at the
ingress URL, idle expiry, deletion, a rescheduled gateway re-adopting its kernels, and a
restarted controller that never duplicates a kernel.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from jupyter_kernel_client import GatewayKernelSession
from testkit.cluster import build
from testkit.cluster.cluster import RELEASE_NAMESPACE, TENANT, Cluster

from .conftest import (
    KERNEL_NS,
    SESSION_NS,
    delete_session,
    gateway_metrics,
    gateway_pod,
    get,
    kernel_pods,
    ready_session,
    session_manifest,
    session_status,
    starts,
    wait_for,
    wait_phase,
)

pytestmark = pytest.mark.timeout(900)

REPO = Path(__file__).resolve().parents[3]
INVALID = sorted((REPO / "examples" / "k8s" / "invalid").glob("*.yaml"))


def client(status: dict[str, Any]) -> GatewayKernelSession:
    """The user's way in: the URLs in the session's status, the tenant token from the env."""
    return GatewayKernelSession(
        status["gatewayUrl"], status["websocketUrl"], "python3", kernel_id=status["kernelId"]
    )


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch, exports: dict[str, str]) -> None:
    monkeypatch.setenv("JUPYTER_GATEWAY_AUTH_TOKEN", exports["JUPYTER_GATEWAY_AUTH_TOKEN"])


@pytest.mark.parametrize("sample", INVALID, ids=lambda p: p.stem)
def test_the_api_server_refuses_a_bad_session_at_create(cluster: Cluster, sample: Path) -> None:
    result = subprocess.run(
        [
            str(build.kubernetes_binary("kubectl")),
            f"--kubeconfig={cluster.kubeconfig}",
            *("create", "--validate=strict", "-n", SESSION_NS, "-f", str(sample)),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0, f"{sample.name} was accepted: {result.stdout}"
    if sample.stem == "reserved-env":
        assert "reserved" in result.stderr, result.stderr
    if sample.stem == "unknown-field":
        assert "unknown field" in result.stderr, result.stderr
    name = yaml.safe_load(sample.read_text())["metadata"]["name"]
    stored = cluster.kubectl("get", "sandboxsession", name, "-n", SESSION_NS, check=False)
    assert not stored, f"{name} was stored"


def test_a_cold_session_runs_code_under_restricted_and_is_removed_with_its_pod(
    cluster: Cluster, exports: dict[str, str]
) -> None:
    namespace = get(cluster, "namespace", KERNEL_NS)["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"
    assert get(cluster, "limitrange", "-n", KERNEL_NS)["items"]
    assert get(cluster, "resourcequota", "-n", KERNEL_NS)["items"]
    before = starts(gateway_metrics(cluster, exports["JUPYTER_GATEWAY_AUTH_TOKEN"]), "cold")

    resources = {"cpu": "300m", "memory": "320Mi"}
    with ready_session(cluster, "cold", idleTimeoutSeconds=600, resources=resources) as status:
        # The ingress URL the chart was given, and its websocket twin.
        assert status["gatewayUrl"] == exports["GATEWAY_HTTP"]
        assert status["websocketUrl"] == exports["GATEWAY_WS"]
        after = starts(gateway_metrics(cluster, exports["JUPYTER_GATEWAY_AUTH_TOKEN"]), "cold")
        assert after == before + 1
        (pod,) = kernel_pods(cluster, f"kernel_id={status['kernelId']}")
        assert pod["metadata"]["labels"]["minisandbox.dev/kernel-username"] == TENANT
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        container = spec["containers"][0]
        assert container["resources"]["requests"] == container["resources"]["limits"] == resources
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        with client(status) as kernel:
            assert str(kernel.execute("6 * 7")) == "42"
            seen = kernel.execute("import os, socket; print(os.getuid(), socket.gethostname())")
            assert str(seen.stdout).split() == ["1000", pod["metadata"]["name"]]
            # The shared volume is the kernel's to write.
            name = f"e2e-{uuid.uuid4().hex[:6]}.txt"
            kernel.execute(f"open('/data/shared/{name}', 'w').write('hi')").raise_for_error()
        assert (cluster.state / "shared" / name).read_text() == "hi"
        (cluster.state / "shared" / name).unlink()
        kernel_id = status["kernelId"]
    wait_for(
        "the kernel pod to go", lambda: not kernel_pods(cluster, f"kernel_id={kernel_id}"), 120
    )


def test_a_session_without_resources_is_served_from_the_warm_pool(
    cluster: Cluster, exports: dict[str, str]
) -> None:
    token = exports["JUPYTER_GATEWAY_AUTH_TOKEN"]
    ready = 'sandbox_pool_kernels{kernelspec="python3",state="ready"} 1.0'
    wait_for("the warm pool to fill", lambda: ready in gateway_metrics(cluster, token), 180, 2)
    warm = starts(gateway_metrics(cluster, token), "warm")
    with ready_session(cluster, "warm", idleTimeoutSeconds=600) as status:
        assert starts(gateway_metrics(cluster, token), "warm") == warm + 1
        with client(status) as kernel:
            seen = kernel.execute(
                "import os, socket\n"
                "print(socket.gethostname(), os.environ['KERNEL_ID'], "
                "os.environ['KERNEL_SANDBOX_SESSION'])"
            )
        pod_name, kernel_id, owner = str(seen.stdout).split()
        assert (kernel_id, owner) == (status["kernelId"], f"{SESSION_NS}/{status['name']}")
        # Started ahead of time as a pool pod, then claimed by this session.
        assert pod_name.startswith("sandbox-pool-")

        def relabelled() -> dict[str, Any] | None:
            pod = get(cluster, "pod", pod_name, "-n", KERNEL_NS)
            labels = pod["metadata"]["labels"]
            owned = labels.get("minisandbox.dev/kernel-username") == TENANT
            return pod if owned and labels.get("minisandbox.dev/kernel-id") == kernel_id else None

        # The claim relabels the pod: its owner and the kernel it now serves, not the pool's.
        pod = wait_for("the claimed pod's owner label", relabelled, 30)
        assert pod["spec"]["securityContext"]["runAsUser"] == 1000

    def pod_gone() -> bool:
        found = get(
            cluster, "pods", "-n", KERNEL_NS, "--field-selector", f"metadata.name={pod_name}"
        )
        return not found["items"]

    wait_for("the claimed pool pod to go", pod_gone, 120)


def test_a_session_bigger_than_the_chart_allows_fails_with_the_launchers_reason(
    cluster: Cluster,
) -> None:
    # The CRD takes any quantity; the chart's maximum is the launcher's. The gateway refuses the
    # start with the launcher's words (403), so the session fails for good instead of retrying a
    # 500 for ever.
    name = f"big-{uuid.uuid4().hex[:8]}"
    cluster.apply([session_manifest(name, resources={"cpu": "64"})])
    try:
        status = wait_phase(cluster, name, {"Ready", "Failed"}, timeout=120)
        assert status["phase"] == "Failed", status
        (ready,) = (c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "GatewayRefused", ready
        assert "is above the largest kernel allowed" in ready["message"], ready
        if status.get("kernelId"):
            assert not kernel_pods(cluster, f"kernel_id={status['kernelId']}")
    finally:
        delete_session(cluster, name)


def test_an_idle_session_expires_and_its_pod_goes(cluster: Cluster) -> None:
    name = f"idle-{uuid.uuid4().hex[:8]}"
    cluster.apply([session_manifest(name, idleTimeoutSeconds=5, resources={"cpu": "250m"})])
    try:
        status = wait_phase(cluster, name, {"Ready", "Failed"})
        assert status["phase"] == "Ready", status
        kernel_id = status["kernelId"]
        status = wait_phase(cluster, name, {"Expired", "Failed"}, timeout=120)
        assert status["phase"] == "Expired", status
        wait_for("the pod to go", lambda: not kernel_pods(cluster, f"kernel_id={kernel_id}"), 120)
    finally:
        delete_session(cluster, name)


def test_a_rescheduled_gateway_re_adopts_its_kernels(cluster: Cluster) -> None:
    with ready_session(
        cluster, "adopt", idleTimeoutSeconds=900, resources={"cpu": "250m"}
    ) as status:
        with client(status) as kernel:
            kernel.execute("state = 'kept'").raise_for_error()
        old = gateway_pod(cluster)["metadata"]["name"]
        cluster.kubectl("delete", "pod", old, "-n", RELEASE_NAMESPACE, "--wait=true")

        def new_gateway_ready() -> bool:
            try:
                pod = gateway_pod(cluster)
            except AssertionError:
                return False
            conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
            return pod["metadata"]["name"] != old and conditions.get("Ready") == "True"

        wait_for("a new gateway pod", new_gateway_ready, 180, 1)
        # The same kernel, with its state: re-adopted, not restarted.
        with client(status) as kernel:
            assert str(kernel.execute("state")) == "'kept'"
        assert len(kernel_pods(cluster, f"kernel_id={status['kernelId']}")) == 1
        assert session_status(cluster, status["name"])["kernelId"] == status["kernelId"]


def test_a_controller_restart_never_duplicates_a_kernel(cluster: Cluster) -> None:
    name = f"restart-{uuid.uuid4().hex[:8]}"
    selector = "app.kubernetes.io/component=controller"
    cluster.apply([session_manifest(name, idleTimeoutSeconds=600, resources={"cpu": "250m"})])
    try:
        # Kill the controller while it reconciles the new session.
        cluster.kubectl("delete", "pod", "-n", RELEASE_NAMESPACE, "-l", selector, "--wait=false")
        status = wait_phase(cluster, name, {"Ready", "Failed"}, timeout=240)
        assert status["phase"] == "Ready", status
        cluster.kubectl("delete", "pod", "-n", RELEASE_NAMESPACE, "-l", selector, "--wait=true")
        cluster.kubectl(
            "rollout", "status", "-n", RELEASE_NAMESPACE,
            "deployment/sandbox-mini-jupyter-sandbox-controller", "--timeout=180s",
        )  # fmt: skip
        again = wait_phase(cluster, name, {"Ready", "Failed"})
        assert again["kernelId"] == status["kernelId"]
        owned = kernel_pods(cluster, f"kernel_id={status['kernelId']}")
        assert len(owned) == 1
        # No other kernel pod was started for this session either.
        everyone = get(cluster, "pods", "-n", KERNEL_NS)["items"]
        for_session = [
            pod
            for pod in everyone
            if any(
                env.get("value") == f"{SESSION_NS}/{name}"
                for env in pod["spec"]["containers"][0].get("env", [])
            )
        ]
        assert len(for_session) == 1, [p["metadata"]["name"] for p in for_session]
    finally:
        delete_session(cluster, name)
