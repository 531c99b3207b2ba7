"""The gateway's warm pool on the README's stack: warm starts in the same box as cold ones,
the request's variables applied inside the kernel, cold starts with a reason, and no pooled
container outliving a gateway crash."""

from __future__ import annotations

import contextlib
import json
import uuid
from typing import Any

import pytest
import requests

from jupyter_kernel_client import GatewayKernelSession, KernelClientError

from .conftest import VERSION, Stack, docker, kernel_network_name

pytestmark = pytest.mark.timeout(600)

# What makes the box: these must be the same for a pooled kernel and a cold one.
BOX_FIELDS = (
    "ReadonlyRootfs",
    "CapDrop",
    "CapAdd",
    "SecurityOpt",
    "Privileged",
    "Memory",
    "MemorySwap",
    "NanoCpus",
    "PidsLimit",
    "Tmpfs",
    "Init",
    "IpcMode",
    "PidMode",
    "UsernsMode",
)


def starts(stack: Stack, source: str, **labels: str) -> float:
    return stack.metric(
        "sandbox_kernel_starts_total", kernelspec="python3", source=source, **labels
    )


def container_of(session: GatewayKernelSession) -> dict[str, Any]:
    """`docker inspect` of the session's kernel container, found from inside (its hostname; a
    container handed out by the pool is renamed, its hostname stays)."""
    hostname = str(session.execute("import socket; print(socket.gethostname())").stdout).strip()
    ids = docker("ps", "-q", "--no-trunc", "--filter", "label=component=kernel").split()
    found = [c for c in json.loads(docker("inspect", *ids)) if c["Config"]["Hostname"] == hostname]
    assert len(found) == 1, f"{len(found)} kernel containers have hostname {hostname}"
    return dict(found[0])


def box(container: dict[str, Any]) -> dict[str, Any]:
    host = container["HostConfig"]
    return {
        **{name: host.get(name) for name in BOX_FIELDS},
        "User": container["Config"]["User"],
        "Image": container["Config"]["Image"],
        "Mounts": sorted((m["Type"], m["Destination"], m["RW"]) for m in container["Mounts"]),
        "Networks": len(container["NetworkSettings"]["Networks"]),
    }


def test_the_default_stack_serves_starts_from_the_pool_in_the_same_box(stack: Stack) -> None:
    stack.wait_pool_ready()
    warm_before = starts(stack, "warm")
    with GatewayKernelSession(stack.gateway_http, stack.gateway_ws, "python3") as warm:
        assert starts(stack, "warm") == warm_before + 1
        warm_container = container_of(warm)
        with GatewayKernelSession(stack.gateway_http, stack.gateway_ws, "sandbox-python") as cold:
            cold_container = container_of(cold)
    assert box(warm_container) == box(cold_container)
    # Its own network, named after the key it was launched with, and nothing else.
    key = warm_container["Config"]["Labels"]["kernel_id"]
    assert list(warm_container["NetworkSettings"]["Networks"]) == [kernel_network_name(key)]
    assert warm_container["Config"]["Labels"]["mini-jupyter-sandbox.kernel-username"] == (
        "sandbox-pool"
    )


def test_a_warm_claim_applies_the_request_environment(stack: Stack) -> None:
    stack.wait_pool_ready()
    warm_before = starts(stack, "warm")
    launch_env = {
        "KERNEL_USERNAME": "alice",
        "KERNEL_PROJECT": "demo",
        "KERNEL_WORKING_DIR": "/data/shared",
    }
    with GatewayKernelSession(
        stack.gateway_http, stack.gateway_ws, "python3", launch_env=launch_env
    ) as session:
        assert starts(stack, "warm") == warm_before + 1
        seen = json.loads(
            str(
                session.execute(
                    "import json, os, subprocess\n"
                    "print(json.dumps({'env': {k: os.environ.get(k) for k in "
                    "('KERNEL_USERNAME', 'KERNEL_PROJECT', 'KERNEL_ID')}, 'cwd': os.getcwd(), "
                    "'child': subprocess.run(['sh', '-c', 'echo $KERNEL_PROJECT'], "
                    "capture_output=True, text=True).stdout.strip()}))"
                ).stdout
            )
        )
        assert seen == {
            "env": {
                # The gateway names the tenant, whatever the request said.
                "KERNEL_USERNAME": "e2e",
                "KERNEL_PROJECT": "demo",
                "KERNEL_ID": session.kernel_id,
            },
            "cwd": "/data/shared",
            "child": "demo",
        }


def test_a_cold_start_honours_the_working_directory_too(stack: Stack) -> None:
    with GatewayKernelSession(
        stack.gateway_http,
        stack.gateway_ws,
        "sandbox-python",
        launch_env={"KERNEL_WORKING_DIR": "/data/shared"},
    ) as session:
        assert str(session.execute("import os; print(os.getcwd())").stdout).strip() == (
            "/data/shared"
        )


def test_a_request_for_another_image_goes_cold_and_says_why(stack: Stack) -> None:
    stack.wait_pool_ready()
    cold_before = starts(stack, "cold", reason="image")
    other = f"mini-jupyter-sandbox/kernel-python:{'latest' if VERSION != 'latest' else VERSION}"
    with GatewayKernelSession(
        stack.gateway_http, stack.gateway_ws, "python3", launch_env={"KERNEL_IMAGE": other}
    ) as session:
        assert str(session.execute("6 * 7")) == "42"
        assert container_of(session)["Config"]["Image"] == other
    assert starts(stack, "cold", reason="image") == cold_before + 1
    logs = stack.run_compose("logs", "--tail=200", "gateway").stdout
    assert "pool miss for python3: KERNEL_IMAGE" in logs


def test_a_gateway_crash_removes_pooled_containers_and_keeps_handed_out_kernels(
    stack: Stack,
) -> None:
    stack.wait_pool_ready()
    kernel_id = str(uuid.uuid4())  # as the controller does: the key of the container differs
    session = GatewayKernelSession(
        stack.gateway_http, stack.gateway_ws, "python3", launch_env={"KERNEL_ID": kernel_id}
    ).start()
    try:
        assert session.kernel_id == kernel_id
        session.execute("remembered = 41").raise_for_error()
        claimed = container_of(session)["Id"]
        stack.wait_pool_ready()
        pooled = {c["Id"] for c in stack.kernel_containers()} - {claimed}
        assert len(pooled) >= 2

        assert kernel_id in stack.crash_gateway()

        # The pooled containers of the crashed gateway are gone; a new pool is built.
        left = set(
            docker("ps", "-aq", "--no-trunc", "--filter", f"label={stack.deployment_label}").split()
        )
        assert not pooled & left
        stack.wait_pool_ready()
        # The handed-out kernel was re-adopted under its id, with its container found by key.
        stack.assert_readopted(kernel_id)
    finally:
        requests.delete(
            f"{stack.gateway_http}/api/kernels/{kernel_id}", headers=stack.auth, timeout=30
        )
        with contextlib.suppress(KernelClientError):
            session.close()
