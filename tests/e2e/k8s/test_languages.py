"""Every language's kernel as a real pod: the chart's one pod template (only the image differs
from the Python kernel's pod), the same NetworkPolicies (probed from code the kernel starts), and
the client's flows (state, errors, a timeout that interrupts, the shared volume)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from jupyter_kernel_client import ExecutionTimeoutError, GatewayKernelSession
from testkit.cluster import enforcer
from testkit.cluster.cluster import Cluster
from testkit.languages import LANGUAGES, Language

from .conftest import kernel_pods
from .test_policies import LISTENING_PORTS, connect_probe, evaluate, targets

pytestmark = pytest.mark.timeout(900)

# What differs between two kernels' pods by nature, not by template.
PER_POD = ("nodeName",)
KERNEL_ID_LABELS = ("kernel_id", "minisandbox.dev/kernel-id")


def open_session(exports: dict[str, str], kernelspec: str) -> GatewayKernelSession:
    return GatewayKernelSession(
        exports["GATEWAY_HTTP"],
        exports["GATEWAY_WS"],
        kernelspec,
        gateway_token=exports["JUPYTER_GATEWAY_AUTH_TOKEN"],
        startup_timeout=240,
    )


@pytest.fixture(scope="module", params=sorted(LANGUAGES))
def language(request: pytest.FixtureRequest) -> Language:
    return LANGUAGES[str(request.param)]


@pytest.fixture(scope="module")
def kernel(exports: dict[str, str], language: Language) -> Iterator[GatewayKernelSession]:
    with open_session(exports, language.kernelspec) as session:
        yield session


@pytest.fixture(scope="module")
def python_kernel(exports: dict[str, str]) -> Iterator[GatewayKernelSession]:
    with open_session(exports, "python3") as session:
        yield session


def pod_of(cluster: Cluster, session: GatewayKernelSession) -> dict[str, Any]:
    (pod,) = kernel_pods(cluster, f"kernel_id={session.kernel_id}")
    return pod


def normalized(pod: dict[str, Any]) -> dict[str, Any]:
    """A kernel pod's spec without what names that one kernel (its id in the environment)."""
    spec = json.loads(json.dumps(pod["spec"]))
    for key in PER_POD:
        spec.pop(key, None)
    for container in spec["containers"]:
        container.pop("image")
        container["env"] = sorted(e["name"] for e in container.get("env", []))
    return dict(spec)


def own_labels(pod: dict[str, Any]) -> dict[str, str]:
    """A kernel pod's labels but those naming its kernel (a warm one is relabelled at claim)."""
    return {k: v for k, v in pod["metadata"]["labels"].items() if k not in KERNEL_ID_LABELS}


def run_python(kernel: GatewayKernelSession, language: Language, source: str) -> Any:
    result = kernel.execute(language.python(source), timeout=240).raise_for_error()
    return json.loads(result.stdout)


def test_the_pod_is_the_python_kernels_pod_with_another_image(
    cluster: Cluster,
    kernel: GatewayKernelSession,
    python_kernel: GatewayKernelSession,
    language: Language,
) -> None:
    pod, python_pod = pod_of(cluster, kernel), pod_of(cluster, python_kernel)
    image = pod["spec"]["containers"][0]["image"]
    assert image == f"mini-jupyter-sandbox/kernel-{language.kernelspec}:0.1.0"
    assert normalized(pod) == normalized(python_pod)
    assert pod["metadata"]["namespace"] == python_pod["metadata"]["namespace"]
    assert own_labels(pod) == own_labels(python_pod)


def test_state_errors_and_a_timeout_that_interrupts(
    kernel: GatewayKernelSession, language: Language
) -> None:
    kernel.execute(language.assign).raise_for_error()
    assert kernel.execute(language.read).raise_for_error().stdout.strip() == "42"
    failed = kernel.execute(language.fails)
    assert failed.error is not None
    error = failed.error
    assert language.error_text in f"{error.ename} {error.evalue} {error.plain_traceback()}"
    with pytest.raises(ExecutionTimeoutError):
        kernel.execute(language.sleeps, timeout=3)
    assert kernel.execute(language.read, timeout=60).raise_for_error().stdout.strip() == "42"


def test_the_shared_volume_is_the_python_kernels(
    kernel: GatewayKernelSession, python_kernel: GatewayKernelSession, language: Language
) -> None:
    path = f"/data/shared/k8s-{language.kernelspec}-{uuid.uuid4().hex[:8]}.txt"
    kernel.execute(language.write(path, "from another language")).raise_for_error()
    read = python_kernel.execute(f"open({path!r}).read()").raise_for_error()
    assert str(read) == repr("from another language")


def test_the_network_policies_hold_for_code_the_kernel_starts(
    cluster: Cluster,
    kernel: GatewayKernelSession,
    python_kernel: GatewayKernelSession,
    language: Language,
) -> None:
    assert enforcer.enforcing(), "the enforcer's chain does not come before the CNI accepts"
    victim_ports = evaluate(python_kernel, LISTENING_PORTS)
    wanted = targets(cluster, {"kernelId": python_kernel.kernel_id}, victim_ports)
    own = run_python(
        kernel,
        language,
        "import json, socket; print(json.dumps(socket.gethostbyname(socket.gethostname())))",
    )
    enforcer.wait_fenced(cluster, own)
    probe = connect_probe(wanted["forbidden"] + wanted["allowed"])
    outcomes = run_python(kernel, language, probe + "import json\nprint(json.dumps(outcomes))\n")
    reached = sorted(t for t, outcome in outcomes.items() if outcome == "connected")
    assert reached == sorted(f"{h}:{p}" for h, p in wanted["allowed"]), outcomes
