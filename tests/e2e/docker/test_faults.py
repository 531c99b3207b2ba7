"""Faults: memory exhaustion, a kernel container killed mid-execution, a gateway restart."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
import requests

from jupyter_kernel_client import GatewayKernelSession, KernelClientError, KernelDiedError

from .conftest import Stack, docker

pytestmark = pytest.mark.integration


def test_memory_bomb_kills_only_that_kernel(stack: Stack) -> None:
    with GatewayKernelSession(stack.gateway_http, stack.gateway_ws, "python3") as neighbour:
        neighbour.execute("state = 'kept'").raise_for_error()
        with GatewayKernelSession(stack.gateway_http, stack.gateway_ws, "python3") as victim:
            victim_container = stack.kernel_container(victim.kernel_id)["Id"]
            with pytest.raises(KernelDiedError):
                victim.execute(
                    "chunks = []\nwhile True:\n    chunks.append(b'x' * (64 * 1024 * 1024))",
                    timeout=120,
                )
            # That kernel's container was killed by the memory limit; no other one was.
            assert victim_container not in docker("ps", "-q", "--no-trunc").split()
        assert str(neighbour.execute("state")) == "'kept'"
    assert requests.get(f"{stack.gateway_http}/api/kernelspecs", timeout=10).status_code == 200


def test_killed_kernel_container_is_reported(stack: Stack) -> None:
    with GatewayKernelSession(stack.gateway_http, stack.gateway_ws, "python3") as session:
        container = stack.kernel_container(session.kernel_id)["Id"]
        killer = threading.Timer(1.0, docker, args=("kill", container))
        killer.start()
        started = time.monotonic()
        try:
            with pytest.raises(KernelDiedError):
                session.execute("import time; time.sleep(60)", timeout=90)
        finally:
            killer.join()
        # Reported promptly, not after the execution's timeout.
        assert time.monotonic() - started < 30


def test_gateway_restart_recovers_and_starts_new_kernels(stack: Stack) -> None:
    gateway = stack.container("gateway")
    docker("restart", gateway, timeout=120)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{stack.gateway_http}/api/kernelspecs", timeout=2).ok:
                break
        except requests.RequestException:
            pass
        time.sleep(0.5)
    with GatewayKernelSession(stack.gateway_http, stack.gateway_ws, "python3") as session:
        assert str(session.execute("6 * 7")) == "42"


def test_gateway_crash_keeps_track_of_running_kernels(stack: Stack) -> None:
    """Session persistence: after the gateway is killed (not stopped), it re-attaches."""
    session = GatewayKernelSession(stack.gateway_http, stack.gateway_ws, "python3").start()
    kernel_id = session.kernel_id
    try:
        session.execute("remembered = 41").raise_for_error()
        gateway = stack.container("gateway")
        docker("kill", gateway)
        docker("start", gateway)
        deadline = time.monotonic() + 90
        listed: list[str] = []
        while time.monotonic() < deadline:
            try:
                response = requests.get(f"{stack.gateway_http}/api/kernels", timeout=2)
                if response.ok:
                    listed = [k["id"] for k in response.json()]
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        assert kernel_id in listed
        with GatewayKernelSession(
            stack.gateway_http, stack.gateway_ws, "python3", kernel_id=kernel_id
        ) as again:
            assert str(again.execute("remembered + 1")) == "42"
    finally:
        # The first session's websocket died with the gateway; remove the kernel directly.
        requests.delete(f"{stack.gateway_http}/api/kernels/{kernel_id}", timeout=30)
        with contextlib.suppress(KernelClientError):
            session.close()
