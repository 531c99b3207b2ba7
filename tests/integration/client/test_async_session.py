"""AsyncGatewayKernelSession against a real gateway: same behaviour as the sync face."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from jupyter_kernel_client import (
    AsyncGatewayKernelSession,
    ExecutionTimeoutError,
    KernelDiedError,
    UnknownKernelNameError,
)
from testkit.gateway import Gateway


async def test_twenty_concurrent_sessions_each_get_only_their_own_output(
    gateway: Gateway,
) -> None:
    # Kernels start one after the other: the test gateway's *local* kernels share the host's
    # ports, chosen by the gateway before each kernel binds them, so kernels starting at the
    # same moment can pick the same port (container kernels each have their own network
    # namespace).  The executions all run at once.
    sessions: list[AsyncGatewayKernelSession] = []

    async def work(n: int, session: AsyncGatewayKernelSession) -> list[str]:
        outputs = []
        for step in range(3):
            result = await session.execute(f"print('worker {n} step {step}')")
            outputs.append(result.stdout)
        return outputs

    try:
        for _ in range(20):
            sessions.append(
                await AsyncGatewayKernelSession(gateway.http, gateway.ws, "python3").start()
            )
        results = await asyncio.gather(*(work(n, s) for n, s in enumerate(sessions)))
    finally:
        await asyncio.gather(*(s.shutdown() for s in sessions))
    for n, outputs in enumerate(results):
        assert outputs == [f"worker {n} step {step}\n" for step in range(3)]


async def test_timeout_interrupts_and_the_session_stays_usable(gateway: Gateway) -> None:
    async with AsyncGatewayKernelSession(gateway.http, gateway.ws, "python3") as session:
        await session.execute("kept = 1")
        with pytest.raises(ExecutionTimeoutError):
            await session.execute("import time; time.sleep(120)", timeout=1)
        assert str(await session.execute("kept + 1")) == "2"


async def test_kernel_killed_mid_execute_is_reported_as_died(gateway: Gateway) -> None:
    async with AsyncGatewayKernelSession(gateway.http, gateway.ws, "python3") as session:
        pid = int(str(await session.execute("import os; os.getpid()")))
        asyncio.get_running_loop().call_later(1.0, os.kill, pid, signal.SIGKILL)
        with pytest.raises(KernelDiedError):
            await session.execute("import time; time.sleep(120)", timeout=90)


async def test_streaming_and_results_of_every_kind(gateway: Gateway) -> None:
    async with AsyncGatewayKernelSession(gateway.http, gateway.ws, "python3") as session:
        events = []
        result = await session.execute(
            "print('a'); 1/0", on_output=lambda event: events.append(event.kind)
        )
        assert events == ["stdout", "error"]
        assert result.error is not None and result.error.ename == "ZeroDivisionError"
        assert str(await session.execute("2 + 2")) == "4"


async def test_unknown_kernel_name(gateway: Gateway) -> None:
    session = AsyncGatewayKernelSession(gateway.http, gateway.ws, "nope", retry_delay=30)
    with pytest.raises(UnknownKernelNameError):
        await asyncio.wait_for(session.start(), 20)
    assert session.closed


async def test_interrupt_while_executing_ends_the_execute(gateway: Gateway) -> None:
    async with AsyncGatewayKernelSession(gateway.http, gateway.ws, "python3") as session:
        running = asyncio.ensure_future(session.execute("import time; time.sleep(60)", timeout=45))
        await asyncio.sleep(1.0)
        await session.interrupt()
        result = await running
        assert result.error is not None and result.error.ename == "KeyboardInterrupt"
        assert session.subprotocol == "v1.kernel.websocket.jupyter.org"
