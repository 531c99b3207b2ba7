"""The controller end to end: a real kopf operator process, a real Enterprise Gateway with real
kernels, and kmock's KubernetesEmulator standing in for the Kubernetes API server over HTTP."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests

from controller.reconcile import RESTARTS_ANNOTATION, derive_kernel_id
from jupyter_kernel_client import GatewayKernelSession, KernelClientError, KernelDiedError
from testkit.gateway import Gateway, free_port
from testkit.kube import Cluster, Controller

from .conftest import NAMESPACE

Obj = dict[str, Any]
StartController = Callable[..., Controller]


def kernel_ids(gateway: Gateway) -> list[str]:
    return [str(k["id"]) for k in gateway.kernels()]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {what}")
        time.sleep(0.05)


def ready_condition(obj: Obj) -> Obj:
    conditions: list[Obj] = [c for c in obj["status"]["conditions"] if c["type"] == "Ready"]
    assert len(conditions) == 1, obj["status"]
    return conditions[0]


def test_create_makes_a_ready_kernel_that_runs_code(
    cluster: Cluster, gateway: Gateway, controllers: StartController
) -> None:
    metrics_port = free_port()
    controllers(SANDBOX_METRICS_PORT=str(metrics_port))
    created = cluster.create(NAMESPACE, "ready", {"env": {"KERNEL_GREETING": "hello"}})

    obj = cluster.wait_phase(NAMESPACE, "ready", "Ready")

    status = obj["status"]
    assert status["kernelId"] == derive_kernel_id(created["metadata"]["uid"])
    assert kernel_ids(gateway) == [status["kernelId"]]
    assert status["gatewayUrl"] == gateway.http
    assert status["websocketUrl"] == gateway.ws
    assert status["observedGeneration"] == 1
    assert ready_condition(obj)["status"] == "True"
    assert status["lastActivity"].endswith("Z")
    with GatewayKernelSession(
        status["gatewayUrl"], status["websocketUrl"], "python3", kernel_id=status["kernelId"]
    ) as session:
        assert str(session.execute("2 + 2")) == "4"
        env = session.execute(
            "import os; [os.environ[k] for k in ('KERNEL_GREETING', 'KERNEL_SANDBOX_SESSION')]"
        )
        assert str(env) == f"['hello', '{NAMESPACE}/ready']"
    # Attaching did not shut the session's kernel down.
    assert kernel_ids(gateway) == [status["kernelId"]]

    scraped = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    assert 'sandbox_controller_reconciles_total{handler="ensure",outcome="ok"} 1.0' in scraped
    assert 'sandbox_controller_kernel_actions_total{action="started"} 1.0' in scraped
    assert "sandbox_controller_reconcile_duration_seconds_count" in scraped


def test_delete_shuts_the_kernel_down(
    cluster: Cluster, gateway: Gateway, controllers: StartController
) -> None:
    controllers()
    cluster.create(NAMESPACE, "doomed")
    kernel_id = cluster.wait_phase(NAMESPACE, "doomed", "Ready")["status"]["kernelId"]
    assert kernel_id in kernel_ids(gateway)

    cluster.delete(NAMESPACE, "doomed")

    cluster.wait_for(NAMESPACE, "doomed", lambda o: o is None, 30, what="deletion")
    assert kernel_id not in kernel_ids(gateway)


def test_unknown_kernel_name_fails_for_good(
    cluster: Cluster, gateway: Gateway, controllers: StartController
) -> None:
    controller = controllers()
    cluster.create(NAMESPACE, "typo", {"kernelName": "no-such-kernel"})

    obj = cluster.wait_phase(NAMESPACE, "typo", "Failed")

    condition = ready_condition(obj)
    assert condition["status"] == "False"
    assert condition["reason"] == "UnknownKernelName"
    assert "no-such-kernel" in obj["status"]["message"]
    assert obj["status"].get("kernelId") is None
    assert kernel_ids(gateway) == []
    wait_until(lambda: "failed permanently" in controller.log(), 10, "a PermanentError")


def test_reserved_env_fails_for_good_and_starts_no_kernel(
    cluster: Cluster, gateway: Gateway, controllers: StartController
) -> None:
    controller = controllers()
    # The emulated API server does not run the CRD's CEL rule, like a cluster whose CRD predates
    # it: the controller is the last line.
    cluster.create(
        NAMESPACE, "greedy", {"env": {"KERNEL_MEMORY": "1", "KERNEL_MEMORY_LIMIT": "64Gi"}}
    )

    obj = cluster.wait_phase(NAMESPACE, "greedy", "Failed")

    condition = ready_condition(obj)
    assert condition["reason"] == "ReservedEnv"
    assert obj["status"]["message"].startswith(
        "spec.env sets KERNEL_MEMORY, KERNEL_MEMORY_LIMIT, which the platform controls"
    )
    assert obj["status"].get("kernelId") is None
    assert kernel_ids(gateway) == []
    wait_until(lambda: "failed permanently" in controller.log(), 10, "a PermanentError")


def test_editing_in_a_reserved_env_shuts_the_kernel_and_fails(
    cluster: Cluster, gateway: Gateway, controllers: StartController
) -> None:
    controllers()
    cluster.create(NAMESPACE, "turned", {"env": {"KERNEL_MODE": "one"}})
    kernel_id = cluster.wait_phase(NAMESPACE, "turned", "Ready")["status"]["kernelId"]
    assert kernel_ids(gateway) == [kernel_id]

    cluster.patch(NAMESPACE, "turned", {"spec": {"env": {"KERNEL_USERNAME": "someone-else"}}})

    obj = cluster.wait_phase(NAMESPACE, "turned", "Failed")
    assert ready_condition(obj)["reason"] == "ReservedEnv"
    assert "KERNEL_USERNAME" in obj["status"]["message"]
    assert kernel_ids(gateway) == []


def test_lost_kernel_is_restarted_then_fails_when_the_budget_is_spent(
    cluster: Cluster, gateway: Gateway, controllers: StartController
) -> None:
    controllers(SANDBOX_MAX_RESTARTS="1")
    cluster.create(NAMESPACE, "fragile")
    kernel_id = cluster.wait_phase(NAMESPACE, "fragile", "Ready")["status"]["kernelId"]

    # The kernel dies and the gateway forgets it (what EG does once its own restarts give up).
    requests.delete(f"{gateway.http}/api/kernels/{kernel_id}", timeout=30).raise_for_status()
    # kopf writes the annotation and the status in two requests (the status is a subresource):
    # the restart is whole once both say so.
    obj = cluster.wait_for(
        NAMESPACE,
        "fragile",
        lambda o: (
            o is not None
            and o["metadata"].get("annotations", {}).get(RESTARTS_ANNOTATION) == "1"
            and "restarted" in o.get("status", {}).get("message", "")
        ),
        what="a restart, counted and reported",
    )
    assert obj is not None
    assert obj["status"]["phase"] == "Ready"
    assert kernel_ids(gateway) == [kernel_id]  # the same id: still one kernel per session

    requests.delete(f"{gateway.http}/api/kernels/{kernel_id}", timeout=30).raise_for_status()
    failed = cluster.wait_phase(NAMESPACE, "fragile", "Failed")
    assert ready_condition(failed)["reason"] == "KernelDied"
    assert kernel_ids(gateway) == []


def test_idle_session_expires_and_its_kernel_goes(
    cluster: Cluster, gateway: Gateway, controllers: StartController
) -> None:
    controllers()
    cluster.create(NAMESPACE, "sleepy", {"idleTimeoutSeconds": 2})
    kernel_id = cluster.wait_phase(NAMESPACE, "sleepy", "Ready")["status"]["kernelId"]
    ready_at = time.monotonic()

    obj = cluster.wait_phase(NAMESPACE, "sleepy", "Expired", timeout=30)

    assert time.monotonic() - ready_at >= 1  # not before it was idle
    assert ready_condition(obj)["reason"] == "IdleTimeout"
    assert obj["status"].get("kernelId") is None
    assert kernel_id not in kernel_ids(gateway)


def test_session_expires_at_its_maximum_lifetime(
    cluster: Cluster, gateway: Gateway, controllers: StartController
) -> None:
    controllers()
    cluster.create(NAMESPACE, "mortal", {"maxLifetimeSeconds": 3})
    status = cluster.wait_phase(NAMESPACE, "mortal", "Ready")["status"]
    with contextlib.ExitStack() as stack:
        session = None
        # On a busy machine the 3 s can run out before the client attaches: the kernel is then
        # gone already, and there is nothing left to keep busy.
        with contextlib.suppress(KernelDiedError):
            session = stack.enter_context(
                GatewayKernelSession(
                    status["gatewayUrl"],
                    status["websocketUrl"],
                    "python3",
                    kernel_id=status["kernelId"],
                )
            )
        # Busy, not idle: only the lifetime can end it.
        deadline = time.monotonic() + 30
        obj = cluster.get(NAMESPACE, "mortal")
        while obj is not None and obj["status"]["phase"] == "Ready":
            assert time.monotonic() < deadline, obj
            # The controller may shut it down between two looks at the status.
            with contextlib.suppress(KernelClientError):
                if session is not None:
                    session.execute("1")
            time.sleep(0.2)
            obj = cluster.get(NAMESPACE, "mortal")
    assert obj is not None
    assert obj["status"]["phase"] == "Expired"
    assert ready_condition(obj)["reason"] == "LifetimeExceeded"
    assert status["kernelId"] not in kernel_ids(gateway)


def test_controller_killed_mid_create_leaves_exactly_one_kernel(
    cluster: Cluster, gateway: Gateway, controllers: StartController
) -> None:
    first = controllers()
    # The API server holds the status write, so the controller is caught after starting the
    # kernel and before recording it anywhere; then it is killed and the write is lost.
    cluster.hold_status_writes("crashy")
    created = cluster.create(NAMESPACE, "crashy")
    kernel_id = derive_kernel_id(created["metadata"]["uid"])
    wait_until(lambda: kernel_id in kernel_ids(gateway), 30, "the kernel on the gateway")
    wait_until(lambda: "crashy" in cluster.held(), 30, "the controller's status write")
    first.kill()
    cluster.release_held(drop=True)
    obj = cluster.get(NAMESPACE, "crashy")
    assert obj is not None
    assert "phase" not in obj.get("status", {}), obj  # the kernel is recorded nowhere

    controllers()

    status = cluster.wait_phase(NAMESPACE, "crashy", "Ready")["status"]
    assert status["kernelId"] == kernel_id
    time.sleep(1)  # a duplicate start would show up by now
    assert kernel_ids(gateway) == [kernel_id]


def test_gateway_down_is_a_temporary_error_then_ready_when_it_is_back(
    cluster: Cluster, controllers: StartController
) -> None:
    gateway = Gateway(port=free_port())  # not started yet
    controller = controllers(gateway.http)
    try:
        cluster.create(NAMESPACE, "patient")
        obj = cluster.wait_phase(NAMESPACE, "patient", "Pending")
        assert ready_condition(obj)["reason"] == "GatewayUnavailable"
        assert "gateway unavailable" in obj["status"]["message"]
        wait_until(lambda: "failed temporarily" in controller.log(), 10, "a TemporaryError")
        wait_until(
            lambda: any(
                e.get("type") == "Warning"
                and e.get("reason") == "GatewayUnavailable"
                and e.get("involvedObject", {}).get("name") == "patient"
                for e in cluster.events(NAMESPACE)
            ),
            10,
            "a Warning event on the session",
        )

        gateway.start()

        status = cluster.wait_phase(NAMESPACE, "patient", "Ready", timeout=60)["status"]
        assert kernel_ids(gateway) == [status["kernelId"]]
        assert controller.proc is not None and controller.proc.poll() is None  # never crashed
    finally:
        gateway.stop()


def test_kernels_of_no_session_are_garbage_collected(
    cluster: Cluster, gateway: Gateway, controllers: StartController
) -> None:
    orphan_id = derive_kernel_id(str(uuid.uuid4()))  # a session that no longer exists
    body = {"name": "python3", "env": {"KERNEL_ID": orphan_id, "KERNEL_USERNAME": "jovyan"}}
    requests.post(f"{gateway.http}/api/kernels", json=body, timeout=30).raise_for_status()
    user = GatewayKernelSession(gateway.http, gateway.ws, "python3").start()  # not ours
    try:
        controllers(SANDBOX_GC_INTERVAL_SECONDS="1")
        cluster.create(NAMESPACE, "owner")
        owned_id = cluster.wait_phase(NAMESPACE, "owner", "Ready")["status"]["kernelId"]

        wait_until(lambda: orphan_id not in kernel_ids(gateway), 30, "the orphan collected")

        time.sleep(2.5)  # two more passes: what is owned or not ours must survive them
        remaining = kernel_ids(gateway)
        assert owned_id in remaining
        assert user.kernel_id in remaining
    finally:
        user.shutdown()


@pytest.mark.parametrize("edit", ["timeout", "env"])
def test_spec_edit_is_observed(
    cluster: Cluster, gateway: Gateway, controllers: StartController, edit: str
) -> None:
    controllers()
    cluster.create(NAMESPACE, "edited", {"env": {"KERNEL_MODE": "one"}})
    status = cluster.wait_phase(NAMESPACE, "edited", "Ready")["status"]
    if edit == "timeout":
        cluster.patch(NAMESPACE, "edited", {"spec": {"idleTimeoutSeconds": 2}})
        expired = cluster.wait_phase(NAMESPACE, "edited", "Expired", timeout=30)
        assert expired["status"]["observedGeneration"] == 2
        return
    cluster.patch(NAMESPACE, "edited", {"spec": {"env": {"KERNEL_MODE": "two"}}})
    obj = cluster.wait_for(
        NAMESPACE,
        "edited",
        lambda o: o is not None and o["status"].get("observedGeneration") == 2,
        what="generation 2 observed",
    )
    assert obj is not None and obj["status"]["phase"] == "Ready"
    with GatewayKernelSession(
        status["gatewayUrl"], status["websocketUrl"], "python3", kernel_id=status["kernelId"]
    ) as session:
        assert str(session.execute("import os; os.environ['KERNEL_MODE']")) == "'two'"
    assert kernel_ids(gateway) == [status["kernelId"]]
