"""What the gateway records of a kernel's activity (its model's ``execution_state`` and
``last_activity``), read from the kernel's iopub messages: the culler decides on it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import requests

from jupyter_kernel_client import GatewayKernelSession
from testkit.gateway import Gateway


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    gw = Gateway(env={"EG_UNAUTHORIZED_USERS": "nobody-in-particular"}).start()
    try:
        yield gw
    finally:
        gw.stop()


def model(gw: Gateway, kernel_id: str) -> dict[str, object]:
    response = requests.get(f"{gw.http}/api/kernels/{kernel_id}", timeout=10)
    response.raise_for_status()
    answer: dict[str, object] = response.json()
    return answer


def wait_for_state(gw: Gateway, kernel_id: str, state: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while model(gw, kernel_id)["execution_state"] != state:
        assert time.monotonic() < deadline, f"kernel never {state}: {model(gw, kernel_id)}"
        time.sleep(0.05)


def test_busy_and_idle_and_last_activity_follow_the_kernel(gateway: Gateway) -> None:
    with GatewayKernelSession(gateway.http, gateway.ws, "python3") as session:
        kernel_id = session.kernel_id
        wait_for_state(gateway, kernel_id, "idle")
        before = model(gateway, kernel_id)["last_activity"]
        running = threading.Thread(target=session.execute, args=("import time; time.sleep(2)",))
        running.start()
        try:
            wait_for_state(gateway, kernel_id, "busy")
        finally:
            running.join()
        wait_for_state(gateway, kernel_id, "idle")
        assert str(model(gateway, kernel_id)["last_activity"]) > str(before)
