"""Faults: memory exhaustion, a kernel container killed mid-execution, a gateway restart."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import pytest
import requests

from jupyter_kernel_client import (
    AsyncGatewayKernelSession,
    ConnectionLostError,
    GatewayConfig,
    GatewayKernelSession,
    KernelClientError,
    KernelDiedError,
)

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
    assert (
        requests.get(
            f"{stack.gateway_http}/api/kernelspecs", headers=stack.auth, timeout=10
        ).status_code
        == 200
    )


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
    stack.wait_for_kernels()
    with GatewayKernelSession(stack.gateway_http, stack.gateway_ws, "python3") as session:
        assert str(session.execute("6 * 7")) == "42"


def test_gateway_crash_keeps_track_of_running_kernels(stack: Stack) -> None:
    """Session persistence: after the gateway is killed (not stopped), it re-attaches."""
    session = GatewayKernelSession(stack.gateway_http, stack.gateway_ws, "python3").start()
    kernel_id = session.kernel_id
    try:
        session.execute("remembered = 41").raise_for_error()
        assert kernel_id in stack.crash_gateway()
        stack.assert_readopted(kernel_id)
    finally:
        # The first session's websocket died with the gateway; remove the kernel directly.
        requests.delete(
            f"{stack.gateway_http}/api/kernels/{kernel_id}", headers=stack.auth, timeout=30
        )
        with contextlib.suppress(KernelClientError):
            session.close()


# --- reconnect: the same session object across a gateway restart ----------------------------------


def _reconnecting(stack: Stack) -> GatewayConfig:
    # Enough backoff to ride out the gateway's restart on a slow machine.
    return GatewayConfig(stack.gateway_http, stack.gateway_ws, max_retries=8, retry_delay=1.0)


def test_session_reconnects_to_its_kernel_after_a_gateway_restart(stack: Stack) -> None:
    """The gateway re-adopts its kernels (session persistence); the session carries on."""
    with GatewayKernelSession(_reconnecting(stack)) as session:
        session.execute("remembered = 41").raise_for_error()
        kernel_id = session.kernel_id
        killer = threading.Timer(1.0, docker, args=("kill", stack.container("gateway")))
        killer.start()
        started = time.monotonic()
        try:
            with pytest.raises(ConnectionLostError):
                session.execute("import time; time.sleep(20)", timeout=60)
        finally:
            killer.join()
        assert time.monotonic() - started < 15  # reported promptly, not after the sleep
        docker("start", stack.container("gateway"))
        stack.wait_for_kernels()
        assert str(session.execute("remembered + 1", timeout=60)) == "42"
        assert session.kernel_id == kernel_id


def test_async_session_reconnects_to_its_kernel_after_a_gateway_restart(stack: Stack) -> None:
    async def main() -> str:
        async with AsyncGatewayKernelSession(_reconnecting(stack)) as session:
            await session.execute("remembered = 41")
            await asyncio.to_thread(stack.crash_gateway)
            return str(await session.execute("remembered + 1", timeout=60))

    assert asyncio.run(main()) == "42"


def test_kernel_gone_across_a_gateway_restart_is_kernel_died(stack: Stack) -> None:
    session = GatewayKernelSession(_reconnecting(stack)).start()
    try:
        session.execute("x = 1").raise_for_error()
        kernel = stack.kernel_container(session.kernel_id)["Id"]
        gateway = stack.container("gateway")
        docker("kill", gateway)
        docker("kill", kernel)  # the kernel dies while nobody watches
        docker("start", gateway)
        stack.wait_for_kernels()
        started = time.monotonic()
        with pytest.raises(KernelDiedError):
            session.execute("x", timeout=60)
        assert time.monotonic() - started < 60
    finally:
        with contextlib.suppress(KernelClientError):
            session.close()
