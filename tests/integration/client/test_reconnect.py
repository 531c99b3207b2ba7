"""Reconnect: a dropped kernel websocket, with the kernel alive (a proxy cuts it) or gone (the
gateway is SIGKILLed with its local kernels and restarted), on both faces."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from jupyter_kernel_client import (
    AsyncGatewayKernelSession,
    ConnectionLostError,
    GatewayConfig,
    GatewayKernelSession,
    KernelDiedError,
    TransportError,
)
from testkit.gateway import Gateway
from tests.integration.client.tcp_proxy import TcpProxy

SLOW = "import time; time.sleep(4); finished = True"


@pytest.fixture
def proxy(gateway: Gateway) -> Iterator[TcpProxy]:
    with TcpProxy(gateway.port) as running:
        yield running


def through(proxy: TcpProxy) -> GatewayConfig:
    return GatewayConfig(proxy.http, proxy.ws, max_retries=6, retry_delay=0.25)


def test_idle_connection_cut_reconnects_to_the_same_kernel(proxy: TcpProxy) -> None:
    with GatewayKernelSession(through(proxy)) as session:
        session.execute("x = 41").raise_for_error()
        kernel_id = session.kernel_id
        proxy.cut()
        time.sleep(0.2)
        assert str(session.execute("x + 1")) == "42"
        assert session.kernel_id == kernel_id


def test_execute_in_flight_raises_connection_lost_at_once_then_recovers(proxy: TcpProxy) -> None:
    with GatewayKernelSession(through(proxy)) as session:
        session.execute("x = 41").raise_for_error()
        threading.Timer(1.0, proxy.cut).start()
        started = time.monotonic()
        with pytest.raises(ConnectionLostError, match="reconnects"):
            session.execute(SLOW, timeout=60)
        assert time.monotonic() - started < 4  # not the sleep, nor the timeout
        # Same kernel, state kept; the interrupted request ran to its end there.
        assert str(session.execute("x + 1, finished", timeout=30)) == "(42, True)"


def test_reconnect_backs_off_until_the_proxy_is_back(proxy: TcpProxy) -> None:
    with GatewayKernelSession(through(proxy)) as session:
        session.execute("x = 1").raise_for_error()
        proxy.cut(refuse=True)
        threading.Timer(1.5, proxy.resume).start()
        started = time.monotonic()
        assert str(session.execute("x + 1")) == "2"
        assert time.monotonic() - started >= 1.0


def test_kernel_gone_with_the_gateway_is_kernel_died() -> None:
    gateway = Gateway().start()
    try:
        config = GatewayConfig(gateway.http, gateway.ws, max_retries=2, retry_delay=0.25)
        session = GatewayKernelSession(config).start()
        session.execute("x = 1").raise_for_error()
        # SIGKILL takes the gateway's local kernels with it (one process group).
        threading.Timer(1.0, gateway.crash).start()
        started = time.monotonic()
        with pytest.raises(ConnectionLostError):  # the gateway cannot be asked meanwhile
            session.execute(SLOW, timeout=60)
        assert time.monotonic() - started < 10
        gateway.start()
        with pytest.raises(KernelDiedError, match="gone"):
            session.execute("x")
        with pytest.raises(KernelDiedError):
            session.execute("x")  # and stays so, without hanging
        session.close()
    finally:
        gateway.stop()


async def test_async_face_reconnects_and_reports_a_lost_connection(proxy: TcpProxy) -> None:
    async with AsyncGatewayKernelSession(through(proxy)) as session:
        await session.execute("x = 41")
        proxy.cut()
        await asyncio.sleep(0.2)
        assert str(await session.execute("x + 1")) == "42"
        asyncio.get_running_loop().call_later(1.0, proxy.cut)
        started = time.monotonic()
        with pytest.raises(ConnectionLostError):
            await session.execute(SLOW, timeout=60)
        assert time.monotonic() - started < 4
        proxy.cut(refuse=True)
        asyncio.get_running_loop().call_later(1.0, proxy.resume)
        assert str(await session.execute("x + 1, finished", timeout=30)) == "(42, True)"


async def test_async_kernel_gone_with_the_gateway_is_kernel_died() -> None:
    gateway = Gateway().start()
    try:
        config = GatewayConfig(gateway.http, gateway.ws, max_retries=2, retry_delay=0.25)
        async with AsyncGatewayKernelSession(config) as session:
            await session.execute("x = 1")
            await asyncio.to_thread(gateway.crash)
            with pytest.raises(TransportError):  # reconnecting to a gateway that is down
                await session.execute("x", timeout=30)
            await asyncio.to_thread(gateway.start)
            with pytest.raises(KernelDiedError):
                await session.execute("x")
    finally:
        gateway.stop()


def test_a_request_the_dead_connection_never_took_is_sent_again(gateway: Gateway) -> None:
    """The socket dies between the session's check that it is open and the send (seen in CI:
    ``[Errno 9] Bad file descriptor`` on send after a proxy cut): the kernel never got that
    request, so the session reconnects and sends it, instead of raising ConnectionLostError."""
    with GatewayKernelSession(gateway.http, gateway.ws, "python3") as session:
        session.execute("x = 41").raise_for_error()
        kernel_id = session.kernel_id
        channel = session._channel
        assert channel is not None
        send = channel.send

        def send_on_a_dead_socket(frame: str | bytes) -> None:
            channel.send = send  # type: ignore[method-assign]
            channel._ws.sock.close()  # gone under the session, unnoticed yet
            send(frame)

        channel.send = send_on_a_dead_socket  # type: ignore[method-assign]
        assert str(session.execute("x + 1")) == "42"
        assert session.kernel_id == kernel_id
