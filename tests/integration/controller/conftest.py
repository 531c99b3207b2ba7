"""Fixtures for the controller: an emulated API server (kmock) and controller processes.

The gateway is the shared real Enterprise Gateway of ``tests/conftest.py``; each test gets a
fresh API server, and every controller kernel it leaves on the gateway is shut down afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import requests

from controller.reconcile import is_controller_kernel_id
from testkit.gateway import Gateway
from testkit.kube import Cluster, Controller

NAMESPACE = "sandbox"


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with Cluster() as running:
        yield running


@pytest.fixture
def controllers(
    cluster: Cluster, gateway: Gateway, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Controller]]:
    """Start controller processes: ``controllers(gateway_url=None, **env)``; all stopped after."""
    started: list[Controller] = []

    def start(gateway_url: str | None = None, **env: str) -> Controller:
        controller = Controller(cluster, gateway_url or gateway.http, env=env).start()
        started.append(controller)
        return controller

    yield start
    for controller in started:
        controller.stop()
    failed = request.node.stash.get(_FAILED, False)
    if failed:
        for controller in started:
            print(f"--- controller log {controller.log_path}:\n{controller.log()}")


@pytest.fixture(autouse=True)
def _no_controller_kernels_left(gateway: Gateway) -> Iterator[None]:
    """Tests start from, and leave, a gateway without controller kernels."""
    _shutdown_controller_kernels(gateway)
    yield
    _shutdown_controller_kernels(gateway)


def _shutdown_controller_kernels(gateway: Gateway) -> None:
    for kernel in gateway.kernels():
        kernel_id = str(kernel["id"])
        if is_controller_kernel_id(kernel_id):
            requests.delete(f"{gateway.http}/api/kernels/{kernel_id}", timeout=30)


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    if getattr(report, "failed", False):
        item.stash[_FAILED] = True
    return report
