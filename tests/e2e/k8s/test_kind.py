"""End to end on a kind cluster: install the chart, declare a SandboxSession, run code in it.

What the unit tests cannot show, this does, against a real API server, scheduler, kubelet and
CNI: the CRD's validation (unknown fields, CEL rules - reserved spec.env names included) refusing
bad sessions, Helm installing the CRD and the chart, Pod Security "restricted" admitting the
kernel pod with requests equal to limits, the controller reconciling a session to Ready, code
executing through the ingress with the client, NetworkPolicies stopping a kernel from reaching
another service, another kernel's ZMQ ports or the gateway's API (probes run as code inside real
kernels that know their neighbours' addresses and ports), and deletion removing the kernel pod.

It needs a kind cluster prepared by .github/workflows/kind-e2e.yaml (ingress-nginx installed,
the five images built and loaded). Elsewhere it skips and says why; SANDBOX_REQUIRE_KIND=1
(set by that workflow) turns the skip into a failure, so CI can never pass by skipping.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[3]
CHART_DIR = REPO_ROOT / "charts" / "mini-jupyter-sandbox"
EXAMPLES = REPO_ROOT / "examples" / "k8s"
VALUES = yaml.safe_load((Path(__file__).parent / "kind-values.yaml").read_text())
CLUSTER = os.environ.get("KIND_CLUSTER_NAME", "sandbox")
RELEASE = "sandbox"
RELEASE_NS = "sandbox"
KERNEL_NS = f"{RELEASE_NS}-kernels"
SESSION_NS = "e2e"
IMAGES = [
    f"mini-jupyter-sandbox/{name}:0.1.0"
    for name in ("gateway", "kernel-python", "notebook", "fileserver", "controller")
]


def _why_no_cluster() -> str | None:
    """Why no kind cluster can be used here (every reason found), or None when one can."""
    missing = [
        f"no {tool} binary" for tool in ("kind", "kubectl", "docker") if not shutil.which(tool)
    ]
    if shutil.which("docker"):
        try:
            info = subprocess.run(
                ["docker", "info", "--format", "{{.ServerVersion}}"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            if info.returncode != 0:
                missing.append("no reachable Docker engine")
        except subprocess.TimeoutExpired:
            missing.append("the Docker engine does not answer")
    if missing:
        return "; ".join(missing)
    clusters = subprocess.run(
        ["kind", "get", "clusters"], capture_output=True, text=True, timeout=60
    )
    if CLUSTER not in clusters.stdout.split():
        return (
            f"no kind cluster named {CLUSTER!r} (the kind-e2e workflow creates it with "
            "tests/e2e/k8s/kind-config.yaml and installs ingress-nginx)"
        )
    for image in IMAGES:
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode:
            return f"image {image} is not built (images/build.sh builds all five)"
    return None


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("SANDBOX_REQUIRE_KIND") == "1":
        pytest.fail(f"SANDBOX_REQUIRE_KIND=1 but {reason}")
    pytest.skip(f"kind e2e not possible here: {reason}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    reason = _why_no_cluster()
    if reason:
        _skip_or_fail(reason)
    pytest_kind = pytest.importorskip("pytest_kind", reason="pytest-kind is not installed")
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    # pytest-kind reuses an existing cluster but only reads its kubeconfig from this file.
    subprocess.run(
        ["kind", "export", "kubeconfig", "--name", CLUSTER, "--kubeconfig", str(kubeconfig)],
        check=True,
        capture_output=True,
    )
    kind = pytest_kind.KindCluster(
        CLUSTER,
        kubeconfig=kubeconfig,
        kind_path=Path(shutil.which("kind") or "kind"),
        kubectl_path=Path(shutil.which("kubectl") or "kubectl"),
    )
    kind.create()
    for image in IMAGES:
        # The workflow loads the images already; a developer's cluster may not have them yet.
        present = subprocess.run(
            [
                "docker",
                "exec",
                f"{CLUSTER}-control-plane",
                "crictl",
                "inspecti",
                f"docker.io/{image}",
            ],
            capture_output=True,
        )
        if present.returncode != 0:
            kind.load_docker_image(image)
    return kind


@pytest.fixture(scope="module")
def release(cluster: Any) -> Iterator[Any]:
    import helm_python

    with helm_python.Config(kubeconfig_path=cluster.kubeconfig_path, namespace=RELEASE_NS) as cfg:
        cfg.install(
            CHART_DIR,
            RELEASE,
            VALUES,
            namespace=RELEASE_NS,
            create_namespace=True,
            wait="watcher",
            timeout=600,
        )
        try:
            cluster.kubectl("create", "namespace", SESSION_NS)
            yield cluster
        finally:
            cluster.kubectl(
                "delete",
                "namespace",
                SESSION_NS,
                "--ignore-not-found",
                "--wait=true",
                "--timeout=180s",
            )
            cfg.uninstall(RELEASE, wait="watcher", timeout=300)


def _get(cluster: Any, *args: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(cluster.kubectl("get", *args, "-o", "json"))
    return loaded


def _wait_for_phase(cluster: Any, name: str, phases: set[str], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = _get(cluster, "sandboxsession", name, "-n", SESSION_NS).get("status", {})
        if status.get("phase") in phases:
            return status
        time.sleep(2)
    raise AssertionError(f"session {name} never reached {phases}; last status {status}")


@pytest.mark.parametrize(
    "sample", sorted((EXAMPLES / "invalid").glob("*.yaml")), ids=lambda p: p.stem
)
def test_api_server_refuses_invalid_sessions(release: Any, sample: Path) -> None:
    result = subprocess.run(
        [
            "kubectl",
            "apply",
            "--dry-run=server",
            "--validate=strict",
            "-n",
            SESSION_NS,
            "-f",
            str(sample),
        ],
        env={**os.environ, "KUBECONFIG": str(release.kubeconfig_path)},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0, f"{sample.name} was accepted: {result.stdout}"


def test_session_runs_code_through_the_ingress(release: Any) -> None:
    from jupyter_kernel_client import GatewayKernelSession

    name = f"e2e-{uuid.uuid4().hex[:8]}"
    manifest = {
        "apiVersion": "minisandbox.dev/v1alpha1",
        "kind": "SandboxSession",
        "metadata": {"name": name, "namespace": SESSION_NS},
        "spec": {
            "kernelName": "python3",
            "idleTimeoutSeconds": 600,
            "resources": {"cpu": "500m", "memory": "512Mi"},
        },
    }
    release.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    status = _wait_for_phase(release, name, {"Ready", "Failed"}, timeout=300)
    assert status["phase"] == "Ready", status
    kernel_id = status["kernelId"]
    public = VALUES["controller"]["publicGatewayUrl"]
    # The controller publishes the ingress URLs: the HTTP base and its websocket twin, which a
    # client passes as gateway_ws together with kernel_id.
    assert status["gatewayUrl"] == public
    assert status["websocketUrl"] == "ws" + public.removeprefix("http")
    assert status["observedGeneration"] == 1

    # The kernel pod exists in the kernel namespace, admitted under "restricted".
    (pod,) = _get(release, "pods", "-n", KERNEL_NS, "-l", f"kernel_id={kernel_id}")["items"]
    assert pod["spec"]["securityContext"]["runAsUser"] == 1000
    resources = pod["spec"]["containers"][0]["resources"]
    assert resources["limits"] == resources["requests"] == {"cpu": "500m", "memory": "512Mi"}

    with GatewayKernelSession(
        status["gatewayUrl"], status["websocketUrl"], "python3", kernel_id=kernel_id
    ) as session:
        assert str(session.execute("2 + 2")) == "4"
        assert str(session.execute("import os; os.getuid()")) == "1000"
        assert (
            str(session.execute("import socket; socket.gethostname()")).strip("'")
            == pod["metadata"]["name"]
        )
        # The shared volume is writable by the kernel.
        session.execute("open('/data/shared/e2e.txt', 'w').write('hello')").raise_for_error()
        # NetworkPolicy: the kernel may resolve names (DNS is allowed) but reach nothing but
        # the gateway - not even the file server next door.
        probe = session.execute(
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('{RELEASE}-mini-jupyter-sandbox-fileserver."
            f"{RELEASE_NS}.svc', 8080), timeout=5); print('connected')\n"
            "except OSError as exc:\n"
            "    print('blocked', type(exc).__name__)\n",
            timeout=30,
        )
        assert "blocked" in str(probe), str(probe)

    release.kubectl(
        "delete", "sandboxsession", name, "-n", SESSION_NS, "--wait=true", "--timeout=120s"
    )
    deadline = time.monotonic() + 120
    while _get(release, "pods", "-n", KERNEL_NS, "-l", f"kernel_id={kernel_id}")["items"]:
        assert time.monotonic() < deadline, "the kernel pod outlived its session"
        time.sleep(2)


def _starts(public: str, source: str) -> float:
    """``sandbox_kernel_starts_total`` of python3 for ``source`` (warm or cold), summed."""
    import requests

    total = 0.0
    for line in requests.get(f"{public}/metrics", timeout=10).text.splitlines():
        wanted = f'source="{source}"' in line and 'kernelspec="python3"' in line
        if line.startswith("sandbox_kernel_starts_total{") and wanted:
            total += float(line.rpartition(" ")[2])
    return total


def test_a_session_without_resources_is_served_from_the_warm_pool(release: Any) -> None:
    """gateway.pool keeps a python3 pod ready; the controller, unchanged, gets it."""
    import requests

    from jupyter_kernel_client import GatewayKernelSession

    public = VALUES["controller"]["publicGatewayUrl"]
    ready = 'sandbox_pool_kernels{kernelspec="python3",state="ready"} 1.0'
    deadline = time.monotonic() + 300
    while ready not in requests.get(f"{public}/metrics", timeout=10).text:
        assert time.monotonic() < deadline, "the warm pool never filled"
        time.sleep(2)
    warm = _starts(public, "warm")

    name = f"e2e-pool-{uuid.uuid4().hex[:8]}"
    manifest = {
        "apiVersion": "minisandbox.dev/v1alpha1",
        "kind": "SandboxSession",
        "metadata": {"name": name, "namespace": SESSION_NS},
        "spec": {"kernelName": "python3", "idleTimeoutSeconds": 600},
    }
    release.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    status = _wait_for_phase(release, name, {"Ready", "Failed"}, timeout=120)
    assert status["phase"] == "Ready", status
    assert _starts(public, "warm") == warm + 1
    kernel_id = status["kernelId"]
    with GatewayKernelSession(
        status["gatewayUrl"], status["websocketUrl"], "python3", kernel_id=kernel_id
    ) as session:
        seen = session.execute(
            "import os, socket\n"
            "print(socket.gethostname(), os.environ['KERNEL_ID'], "
            "os.environ['KERNEL_SANDBOX_SESSION'])"
        )
        pod_name, kernel_env_id, owner = str(seen.stdout).split()
    assert (kernel_env_id, owner) == (kernel_id, f"{SESSION_NS}/{name}")
    pod = _get(release, "pod", pod_name, "-n", KERNEL_NS)
    # Started ahead of time under its own key; the controller's id is the gateway's.
    assert pod["metadata"]["labels"]["kernel_id"] != kernel_id
    assert pod["spec"]["securityContext"]["runAsUser"] == 1000

    release.kubectl(
        "delete", "sandboxsession", name, "-n", SESSION_NS, "--wait=true", "--timeout=120s"
    )
    deadline = time.monotonic() + 120
    while _get(release, "pods", "-n", KERNEL_NS, "--field-selector", f"metadata.name={pod_name}")[
        "items"
    ]:
        assert time.monotonic() < deadline, "the pooled kernel's pod outlived its session"
        time.sleep(2)


# --- containment: a kernel reaches nothing but its own gateway connection -------------------

# Run inside a kernel: every TCP port it listens on (its ZMQ ports), from the kernel's own view.
LISTENING_PORTS = """\
ports = set()
for table in ('/proc/net/tcp', '/proc/net/tcp6'):
    try:
        lines = open(table).read().splitlines()[1:]
    except OSError:
        continue
    for line in lines:
        fields = line.split()
        if fields[3] == '0A':  # LISTEN
            ports.add(int(fields[1].rsplit(':', 1)[1], 16))
sorted(ports)
"""


def connect_probe(targets: list[tuple[str, int]]) -> str:
    """Kernel code that tries a TCP connection to each target; evaluates to {target: outcome}."""
    return (
        "import socket\n"
        "outcomes = {}\n"
        f"for host, port in {targets!r}:\n"
        "    try:\n"
        "        socket.create_connection((host, port), timeout=3).close()\n"
        "        outcomes[f'{host}:{port}'] = 'connected'\n"
        "    except OSError as exc:\n"
        "        outcomes[f'{host}:{port}'] = type(exc).__name__\n"
        "outcomes\n"
    )


@contextlib.contextmanager
def ready_session(cluster: Any, name: str) -> Iterator[dict[str, Any]]:
    """A Ready SandboxSession's status; the session is deleted afterwards."""
    manifest = {
        "apiVersion": "minisandbox.dev/v1alpha1",
        "kind": "SandboxSession",
        "metadata": {"name": name, "namespace": SESSION_NS},
        "spec": {"kernelName": "python3", "resources": {"cpu": "250m", "memory": "512Mi"}},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    try:
        status = _wait_for_phase(cluster, name, {"Ready", "Failed"}, timeout=300)
        assert status["phase"] == "Ready", status
        yield status
    finally:
        cluster.kubectl(
            "delete", "sandboxsession", name, "-n", SESSION_NS, "--wait=true", "--timeout=120s"
        )


def _kernel_pod_ip(cluster: Any, kernel_id: str) -> str:
    (pod,) = _get(cluster, "pods", "-n", KERNEL_NS, "-l", f"kernel_id={kernel_id}")["items"]
    ip: str = pod["status"]["podIP"]
    return ip


def test_a_kernel_reaches_neither_another_kernel_nor_the_gateway_api(release: Any) -> None:
    from jupyter_kernel_client import GatewayKernelSession

    (gateway_pod,) = _get(
        release,
        "pods",
        "-n",
        RELEASE_NS,
        "-l",
        f"app.kubernetes.io/component=gateway,app.kubernetes.io/instance={RELEASE}",
    )["items"]
    gateway_ip = gateway_pod["status"]["podIP"]
    ports = {p["name"]: p["containerPort"] for p in gateway_pod["spec"]["containers"][0]["ports"]}
    gateway_service = f"{RELEASE}-mini-jupyter-sandbox-gateway.{RELEASE_NS}.svc"
    suffix = uuid.uuid4().hex[:8]

    with contextlib.ExitStack() as stack:
        statuses = {
            role: stack.enter_context(ready_session(release, f"{role}-{suffix}"))
            for role in ("victim", "attacker")
        }
        sessions = {
            role: stack.enter_context(
                GatewayKernelSession(
                    status["gatewayUrl"],
                    status["websocketUrl"],
                    "python3",
                    kernel_id=status["kernelId"],
                )
            )
            for role, status in statuses.items()
        }
        listening = {
            role: ast.literal_eval(str(session.execute(LISTENING_PORTS, timeout=30)))
            for role, session in sessions.items()
        }
        addresses = {role: _kernel_pod_ip(release, s["kernelId"]) for role, s in statuses.items()}
        # Each kernel, knowing the other's address and every port it listens on, tries them
        # all, then the gateway's API by pod address and by Service name.
        for role, other in (("attacker", "victim"), ("victim", "attacker")):
            assert len(listening[other]) >= 5, listening  # shell, iopub, stdin, control, hb
            forbidden = [(addresses[other], port) for port in listening[other]]
            forbidden += [(gateway_ip, ports["http"]), (gateway_service, ports["http"])]
            # The one connection a kernel needs: its launcher's answer to the gateway. It shows
            # the probe can connect at all, so the refusals mean something.
            allowed = [(gateway_ip, ports["response"])]
            outcomes = ast.literal_eval(
                str(sessions[role].execute(connect_probe(forbidden + allowed), timeout=180))
            )
            reached = [target for target, outcome in outcomes.items() if outcome == "connected"]
            assert reached == [f"{gateway_ip}:{ports['response']}"], (role, outcomes)
        # Both kernels still serve their own users.
        assert str(sessions["victim"].execute("6 * 7")) == "42"
        assert str(sessions["attacker"].execute("6 * 7")) == "42"
