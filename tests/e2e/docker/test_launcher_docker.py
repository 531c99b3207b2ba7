"""The kernel launcher against the real Docker engine: a start with a kernel id that another
start holds joins nothing of it, and a failed start takes away only what it made.

No compose stack: the launcher runs here as the gateway runs it, with a throwaway stand-in for
the gateway container and a deployment label of its own, so everything it makes is found and
removed by that label.  The kernel containers are kept when they exit
(``SANDBOX_REMOVE_CONTAINER=false``): a kernel here never hears from a gateway and may exit,
and the test counts every container a launch made.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from testkit.compose import DEPLOYMENT_LABEL

from .conftest import VERSION, docker, kernel_network_name, unavailable

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

IMAGE = f"mini-jupyter-sandbox/kernel-python:{VERSION}"
CONCURRENT = 10
RESPONSE_SINK = """
import socket, threading
server = socket.create_server(("0.0.0.0", 8877))
def drain(conn):
    with conn:
        while conn.recv(65536):
            pass
while True:
    threading.Thread(target=drain, args=(server.accept()[0],), daemon=True).start()
"""


@dataclass
class Scope:
    """One test's deployment label, stand-in gateway and launcher environment."""

    deployment: str
    gateway: str
    env: dict[str, str]

    def launch(self, kernel_id: str, user: str = "alice") -> subprocess.CompletedProcess[str]:
        argv = [
            sys.executable,
            "-I",
            "-m",
            "sandbox_gateway.launchers.docker",
            "--kernel-id",
            kernel_id,
            "--response-address",
            "sandbox-gateway:8877",
            "--public-key",
            "K",
            "--image",
            IMAGE,
        ]
        env = {**self.env, "KERNEL_USERNAME": user}
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)

    def containers(self, kernel_id: str) -> list[dict[str, Any]]:
        """Every container labelled with the kernel id, in any state."""
        ids = docker("ps", "-aq", "--no-trunc", "--filter", f"label=kernel_id={kernel_id}")
        return json.loads(docker("inspect", *ids.split())) if ids.split() else []

    def network(self, kernel_id: str) -> dict[str, Any] | None:
        found = docker("network", "inspect", kernel_network_name(kernel_id), check=False)
        return json.loads(found)[0] if found.strip().startswith("[") else None


@pytest.fixture
def scope() -> Iterator[Scope]:
    if subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode != 0:
        unavailable("no Docker engine reachable (start dockerd)")
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode:
        unavailable(f"image not built: {IMAGE} (run images/build.sh)")
    deployment = f"launcher-test-{uuid.uuid4().hex[:12]}"
    label = f"{DEPLOYMENT_LABEL}={deployment}"
    home = f"{deployment}-gateway"
    docker("network", "create", "--internal", "--label", label, home)
    # It takes in the kernels' launch responses (and answers nothing), so they stay up.
    gateway = docker(
        "run", "-d", "--rm", "--label", label, "--network", home, "--name", home,
        "--entrypoint", "python3", IMAGE, "-c", RESPONSE_SINK,
    ).strip()  # fmt: skip
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "EG_DOCKER_MODE": "docker",
        "SANDBOX_GATEWAY_CONTAINER": gateway,
        "SANDBOX_DEPLOYMENT": deployment,
        "SANDBOX_KERNEL_SUBNETS": os.environ.get("SANDBOX_KERNEL_SUBNETS", "10.213.0.0/16"),
        "SANDBOX_SHARED_VOLUME": f"{deployment}-shared",
        "SANDBOX_REMOVE_CONTAINER": "false",
    }
    try:
        yield Scope(deployment, gateway, env)
    finally:
        ids = docker("ps", "-aq", "--filter", f"label={label}", check=False).split()
        if ids:
            docker("rm", "-f", *ids, check=False)
        networks = docker("network", "ls", "-q", "--filter", f"label={label}").split()
        if networks:
            docker("network", "rm", *networks, check=False)
        docker("volume", "rm", env["SANDBOX_SHARED_VOLUME"], check=False)


def test_concurrent_starts_of_one_kernel_id_never_run_two_containers(scope: Scope) -> None:
    """Before: all ten started, on one network.  Through the gateway a second start of an id
    is a 409 before any launch; here the launcher alone must hold: at most one container runs,
    alone with the gateway on its network, and every refused launch leaves nothing behind.
    That none starts is allowed (fail closed): Docker 20.10 may create two networks of one name
    when asked at once, and then every launch that sees another's container refuses."""
    kernel_id = str(uuid.uuid4())
    users = [f"user{n}" for n in range(CONCURRENT)]  # distinct names: Docker refuses no create
    with ThreadPoolExecutor(CONCURRENT) as pool:
        outcomes = list(pool.map(lambda user: scope.launch(kernel_id, user), users))
    started = [outcome for outcome in outcomes if outcome.returncode == 0]
    assert len(started) <= 1, [outcome.stderr for outcome in outcomes]
    for outcome in outcomes:
        if outcome.returncode:
            assert f"launch_docker: kernel {kernel_id}:" in outcome.stderr
    containers = scope.containers(kernel_id)
    assert len(containers) == len(started), [c["Name"] for c in containers]
    if containers:
        network = scope.network(kernel_id)
        assert network is not None
        assert list(containers[0]["NetworkSettings"]["Networks"]) == [network["Name"]]
        assert set(network["Containers"]) <= {containers[0]["Id"], scope.gateway}


def test_a_start_never_joins_the_network_of_a_kernel_still_starting(scope: Scope) -> None:
    """The victim's launch has made its network and attached the gateway; its container does
    not exist yet.  A second start with the victim's id, for someone else, must not get a
    container onto that network, and must not remove it either."""
    kernel_id = str(uuid.uuid4())
    label = f"{DEPLOYMENT_LABEL}={scope.deployment}"
    victim = docker(
        "network", "create", "--internal", "--label", label, "--label", f"kernel_id={kernel_id}",
        kernel_network_name(kernel_id),
    ).strip()  # fmt: skip
    docker("network", "connect", victim, scope.gateway)
    outcome = scope.launch(kernel_id, user="mallory")
    assert outcome.returncode == 1
    assert "already exists" in outcome.stderr
    assert scope.containers(kernel_id) == []
    network = scope.network(kernel_id)
    assert network is not None and network["Id"] == victim
    assert set(network["Containers"]) == {scope.gateway}


def test_a_start_with_the_id_of_a_running_kernel_is_refused_and_changes_nothing(
    scope: Scope,
) -> None:
    kernel_id = str(uuid.uuid4())
    assert scope.launch(kernel_id, user="alice").returncode == 0
    (victim,) = scope.containers(kernel_id)
    assert victim["State"]["Status"] == "running"
    network = scope.network(kernel_id)
    assert network is not None
    outcome = scope.launch(kernel_id, user="mallory")
    assert outcome.returncode == 1
    assert "already has a container" in outcome.stderr
    assert [c["Id"] for c in scope.containers(kernel_id)] == [victim["Id"]]
    after = scope.network(kernel_id)
    assert after is not None and after["Id"] == network["Id"]
    assert set(after["Containers"]) == set(network["Containers"])
