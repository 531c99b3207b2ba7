"""A start ends within its ``startup_timeout`` whatever the gateway does with the websocket.

A gateway out of ZMQ sockets (or any gateway that takes the upgrade and never answers it) made
each connection attempt wait a whole ``startup_timeout``, once per retry. The stand-in here is
a named mock of that one behaviour: it answers the REST call that says the kernel exists, and
holds every websocket upgrade unanswered.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from jupyter_kernel_client import (
    AsyncGatewayKernelSession,
    GatewayConfig,
    GatewayKernelSession,
    StartupTimeoutError,
)

KERNEL_ID = "6c4b3f0e-1d2a-4e5f-8a9b-0c1d2e3f4a5b"
STARTUP_TIMEOUT = 3.0


class _HoldsUpgrades(BaseHTTPRequestHandler):
    released = threading.Event()

    def do_GET(self) -> None:
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self.released.wait(60)  # never answered while the test runs
            return
        body = json.dumps({"id": KERNEL_ID, "name": "python3", "execution_state": "idle"})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def stalling_gateway() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HoldsUpgrades)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        _HoldsUpgrades.released.set()
        server.shutdown()
        server.server_close()
        _HoldsUpgrades.released.clear()


def _config(url: str) -> GatewayConfig:
    # Five retries: before, six attempts of a whole startup_timeout each (18 s and more).
    return GatewayConfig(
        url, startup_timeout=STARTUP_TIMEOUT, max_retries=5, retry_delay=0.2, token="t"
    )


def test_an_unanswered_upgrade_ends_the_start_within_its_timeout(stalling_gateway: str) -> None:
    session = GatewayKernelSession(_config(stalling_gateway), kernel_id=KERNEL_ID)
    began = time.monotonic()
    with pytest.raises(StartupTimeoutError, match="websocket did not open within 3 s"):
        session.start()
    assert time.monotonic() - began < 2 * STARTUP_TIMEOUT


async def test_the_async_face_ends_within_its_timeout_too(stalling_gateway: str) -> None:
    session = AsyncGatewayKernelSession(_config(stalling_gateway), kernel_id=KERNEL_ID)
    began = time.monotonic()
    with pytest.raises(StartupTimeoutError, match="websocket did not open within 3 s"):
        await session.start()
    assert time.monotonic() - began < 2 * STARTUP_TIMEOUT
