"""Restarting a Docker kernel: each restart succeeds, the kernel runs again on a private network
of its own (one, fresh), and once the kernel is shut down no network of it is left.

A restart used to race its own network clean-up: the removal queued when the old container went
could run after the relaunch had found and reused the network, so the relaunch failed ("network
not found") or timed out, and restarts in quick succession made it likely.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from jupyter_kernel_client import GatewayKernelSession, KernelClientError

from .conftest import Stack, docker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

RESTARTS = 8


def networks_of(kernel_id: str) -> list[dict[str, Any]]:
    """`docker network inspect` of every network labelled with the kernel's id."""
    names = docker(
        "network", "ls", "-q", "--no-trunc", "--filter", f"label=kernel_id={kernel_id}"
    ).split()
    found = []
    for name in names:
        with contextlib.suppress(RuntimeError):  # removed while we looked
            found.append(json.loads(docker("network", "inspect", name))[0])
    return found


def assert_alone_on_its_own_network(stack: Stack, kernel_id: str) -> tuple[str, str]:
    """The kernel's container is on exactly one network, the only one labelled for it, with no
    member but the gateway and the egress container (egress is on in this stack) besides;
    returns the ids of that container and that network."""
    container = stack.kernel_container(kernel_id)
    attached = container["NetworkSettings"]["Networks"]
    assert len(attached) == 1, attached
    networks = networks_of(kernel_id)
    assert [network["Id"] for network in networks] == [
        next(iter(attached.values()))["NetworkID"]
    ], [network["Name"] for network in networks]
    members = set(networks[0]["Containers"] or {})
    assert members == {
        container["Id"],
        stack.container("gateway"),
        stack.container("egress"),
    }, members
    return str(container["Id"]), str(networks[0]["Id"])


def wait_no_network_of(kernel_id: str, timeout: float = 60) -> list[str]:
    """Names of the kernel's networks still there after ``timeout`` (the removal is queued)."""
    deadline = time.monotonic() + timeout
    while True:
        left = [network["Name"] for network in networks_of(kernel_id)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def restart(stack: Stack, kernel_id: str) -> None:
    response = requests.post(
        f"{stack.gateway_http}/api/kernels/{kernel_id}/restart", headers=stack.auth, timeout=120
    )
    assert response.status_code == 200, (response.status_code, response.text[:500])


def start_cold(stack: Stack) -> str:
    """A kernel of sandbox-python, which has no warm pool; returns its id."""
    response = requests.post(
        f"{stack.gateway_http}/api/kernels",
        json={"name": "sandbox-python", "env": {"KERNEL_USERNAME": "restarter"}},
        headers=stack.auth,
        timeout=120,
    )
    assert response.status_code == 201, response.text[:500]
    return str(response.json()["id"])


@pytest.fixture
def kernel(stack: Stack) -> Iterator[str]:
    """A cold-started kernel, deleted at the end."""
    kernel_id = start_cold(stack)
    yield kernel_id
    requests.delete(f"{stack.gateway_http}/api/kernels/{kernel_id}", headers=stack.auth, timeout=60)


def test_restarts_in_quick_succession_each_bring_the_kernel_back(stack: Stack, kernel: str) -> None:
    seen = [assert_alone_on_its_own_network(stack, kernel)]
    for _ in range(RESTARTS):
        restart(stack, kernel)  # the next one follows as soon as this one answers
        seen.append(assert_alone_on_its_own_network(stack, kernel))
    # Every restart made a new container, on a network made for it: none joined a network
    # that was there before it (one whose removal was under way).
    assert len({container for container, _ in seen}) == RESTARTS + 1
    assert len({network for _, network in seen}) == RESTARTS + 1
    with GatewayKernelSession(
        stack.gateway_http, stack.gateway_ws, "sandbox-python", kernel_id=kernel
    ) as session:
        assert str(session.execute("6 * 7")) == "42"
    response = requests.delete(
        f"{stack.gateway_http}/api/kernels/{kernel}", headers=stack.auth, timeout=60
    )
    assert response.status_code == 204
    assert wait_no_network_of(kernel) == []


def attach(stack: Stack, kernel_id: str) -> GatewayKernelSession:
    """A session on the running kernel (jupyter_server 1.x keeps an open websocket on the old
    kernel's ports after a restart, so a client opens a new one, as JupyterLab does)."""
    return GatewayKernelSession(
        stack.gateway_http, stack.gateway_ws, "sandbox-python", kernel_id=kernel_id
    )


def test_each_restart_gives_a_fresh_kernel_that_runs(stack: Stack, kernel: str) -> None:
    networks = [assert_alone_on_its_own_network(stack, kernel)[1]]
    for round_ in range(3):
        with attach(stack, kernel) as session:
            # Nothing of the kernel before the restart survives it.
            assert str(session.execute("'marker' in dir()")) == "False"
            session.execute(f"marker = {round_}").raise_for_error()
        restart(stack, kernel)
        networks.append(assert_alone_on_its_own_network(stack, kernel)[1])
    with attach(stack, kernel) as session:
        assert str(session.execute("'marker' in dir()")) == "False"
    assert len(set(networks)) == len(networks)
    requests.delete(f"{stack.gateway_http}/api/kernels/{kernel}", headers=stack.auth, timeout=60)
    assert wait_no_network_of(kernel) == []


def runs_again(
    stack: Stack, kernel_id: str, timeout: float = 120, kernelspec: str = "sandbox-python"
) -> bool:
    """Whether a new session on the kernel runs code before ``timeout``: a websocket opened
    while the gateway still relaunches stays on the old kernel's ports, so each try is a fresh
    session with a short start-up timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        session = GatewayKernelSession(
            stack.gateway_http,
            stack.gateway_ws,
            kernelspec,
            startup_timeout=10,
            kernel_id=kernel_id,
        )
        try:
            with session:
                return str(session.execute("6 * 7", timeout=30)) == "42"
        except KernelClientError:
            time.sleep(1)
    return False


def test_a_kernel_that_died_is_restarted_on_a_fresh_network(stack: Stack, kernel: str) -> None:
    """The gateway's automatic restart (its restarter, while a client is connected) takes the
    same path: the dead container's network goes, the new container gets its own."""
    before = assert_alone_on_its_own_network(stack, kernel)
    session = attach(stack, kernel).start()
    try:
        with contextlib.suppress(KernelClientError):
            session.execute("import os; os._exit(1)", timeout=30)
        assert runs_again(stack, kernel)
        after = assert_alone_on_its_own_network(stack, kernel)
        assert after[0] != before[0] and after[1] != before[1]
    finally:
        with contextlib.suppress(KernelClientError):
            session.close()
    requests.delete(f"{stack.gateway_http}/api/kernels/{kernel}", headers=stack.auth, timeout=60)
    assert wait_no_network_of(kernel) == []


def container_named(stack: Stack, name: str, timeout: float = 30) -> dict[str, Any] | None:
    """`docker inspect` of this stack's kernel container called ``name`` once there is one."""
    deadline = time.monotonic() + timeout
    while True:
        for container in stack.kernel_containers():
            if container["Name"] == f"/{name}":
                return container
        if time.monotonic() > deadline:
            return None
        time.sleep(0.5)


def test_a_kernel_served_from_the_pool_carries_its_owner_s_name_and_keeps_it_on_restart(
    stack: Stack,
) -> None:
    """Docker cannot change a label: the container keeps ``kernel-username=sandbox-pool``, the
    user it was launched for, but once handed out it is named as a cold start of its owner's
    kernel is; a restart relaunches it as that cold start, on a network of its own."""
    stack.wait_pool_ready()
    kernel_id = str(uuid.uuid4())  # as the controller does: the container's key differs
    with GatewayKernelSession(
        stack.gateway_http,
        stack.gateway_ws,
        "python3",
        launch_env={"KERNEL_ID": kernel_id},
    ) as session:
        assert session.kernel_id == kernel_id
        hostname = str(session.execute("import socket; print(socket.gethostname())").stdout)
        warm = container_named(stack, f"e2e-{kernel_id}")  # the tenant is the user
        assert warm is not None, [c["Name"] for c in stack.kernel_containers()]
        assert warm["Config"]["Hostname"] == hostname.strip()  # the session's own container
        key = warm["Config"]["Labels"]["kernel_id"]
        assert key != kernel_id  # the id it was started with, for the pool
        assert warm["Config"]["Labels"]["mini-jupyter-sandbox.kernel-username"] == "sandbox-pool"
        restart(stack, kernel_id)
        assert_alone_on_its_own_network(stack, kernel_id)
        cold = stack.kernel_container(kernel_id)
        assert cold["Name"] == f"/e2e-{kernel_id}"
        assert cold["Config"]["Labels"]["mini-jupyter-sandbox.kernel-username"] == "e2e"
        assert runs_again(stack, kernel_id, kernelspec="python3")
    assert wait_no_network_of(kernel_id) == []
    assert wait_no_network_of(key) == []
