"""The gateway's ZMQ socket cap is its setting, on the context its kernels' sockets live in.

Each live kernel holds about six ZMQ sockets in the gateway. At libzmq's default cap (1023) a
gateway stopped opening sessions at about 165 kernels. ``SANDBOX_MAX_ZMQ_SOCKETS`` (default
65536) sets the cap of the kernel manager's context. Here it is set low, so that reaching it
takes a few local kernels: past it a session fails within its startup_timeout, with the
client's error; below it every session runs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from jupyter_kernel_client import GatewayConfig, GatewayKernelSession, KernelClientError
from testkit.gateway import Gateway

KERNELS = 14
STARTUP_TIMEOUT = 8.0


@contextlib.contextmanager
def gateway_with(cap: int) -> Iterator[tuple[Gateway, list[GatewayKernelSession]]]:
    gateway = Gateway(
        env={
            "SANDBOX_MAX_ZMQ_SOCKETS": str(cap),
            "SANDBOX_MAX_KERNELS": str(KERNELS + 2),
            "EG_UNAUTHORIZED_USERS": "nobody-in-particular",
        }
    ).start()
    sessions: list[GatewayKernelSession] = []
    try:
        yield gateway, sessions
    finally:
        for session in sessions:
            session.shutdown()
        gateway.stop()


def _open(gateway: Gateway, sessions: list[GatewayKernelSession]) -> float | None:
    """Start one more session; None if it ran ``1 + 1``, else seconds until it failed."""
    config = GatewayConfig(gateway.http, startup_timeout=STARTUP_TIMEOUT, retry_delay=0.2)
    session = GatewayKernelSession(config)
    began = time.monotonic()
    try:
        session.start()
    except KernelClientError:
        return time.monotonic() - began
    sessions.append(session)
    assert str(session.execute("1 + 1")) == "2"
    return None


def test_past_the_cap_a_session_fails_within_its_timeout() -> None:
    with gateway_with(64) as (gateway, sessions):
        failed_after = None
        for _ in range(KERNELS):
            failed_after = _open(gateway, sessions)
            if failed_after is not None:
                break
        assert failed_after is not None, f"{KERNELS} sessions fit in 64 sockets: the cap is unset"
        assert failed_after < STARTUP_TIMEOUT + 2
        assert "Too many open files" in gateway.log_path.read_text()


def test_below_the_cap_every_session_runs() -> None:
    with gateway_with(512) as (gateway, sessions):
        for _ in range(KERNELS):
            assert _open(gateway, sessions) is None
