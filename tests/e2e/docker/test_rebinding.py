"""DNS rebinding against the compose stack, through Docker's published ports.

A web page that rebinds its own name to 127.0.0.1 reaches every published port with
``Host: <its name>``.  Each service refuses that name, on plain HTTP and on a websocket upgrade,
whatever Docker's port forwarding does to the source address; its own names still work.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from jupyter_kernel_client import GatewayKernelSession
from testkit.http import upgrade_status

from .conftest import Stack

pytestmark = pytest.mark.integration

FOREIGN = "rebind.attacker.example"


@pytest.fixture(scope="module")
def kernel_id(stack: Stack) -> Iterator[str]:
    with GatewayKernelSession(
        stack.gateway_http, stack.gateway_ws, "python3", gateway_token=stack.gateway_token
    ) as session:
        yield str(session.kernel_id)


def routes(stack: Stack) -> dict[str, tuple[int, list[str]]]:
    """Per service: its published port and HTTP paths a rebinding page would want."""
    return {
        "gateway": (stack.gateway_port, ["/api/kernels", "/api/kernelspecs"]),
        "notebook": (stack.notebook_port, ["/api/contents", "/api/status", "/tree"]),
        "fileserver": (stack.file_server_port, ["/files", "/health"]),
    }


@pytest.mark.parametrize("service", ["gateway", "notebook", "fileserver"])
def test_foreign_host_is_refused_over_http(stack: Stack, service: str) -> None:
    port, paths = routes(stack)[service]
    headers = {"Host": f"{FOREIGN}:{port}", "Authorization": f"Bearer {stack.token}"}
    for path in paths:
        response = requests.get(f"http://127.0.0.1:{port}{path}", headers=headers, timeout=10)
        assert 400 <= response.status_code < 500, (service, path, response.status_code)
        assert "Traceback" not in response.text


def test_foreign_host_cannot_start_a_kernel(stack: Stack) -> None:
    before = requests.get(
        f"{stack.gateway_http}/api/kernels", headers=stack.auth, timeout=10
    ).json()
    response = requests.post(
        f"{stack.gateway_http}/api/kernels",
        json={"name": "python3", "env": {"KERNEL_USERNAME": "web"}},
        headers={**stack.auth, "Host": f"{FOREIGN}:{stack.gateway_port}"},
        timeout=60,
    )
    assert response.status_code == 421
    after = requests.get(f"{stack.gateway_http}/api/kernels", headers=stack.auth, timeout=10).json()
    assert {k["id"] for k in after} == {k["id"] for k in before}


def test_foreign_host_websocket_upgrade_is_refused(stack: Stack, kernel_id: str) -> None:
    gateway_path = f"/api/kernels/{kernel_id}/channels"
    assert upgrade_status(stack.gateway_port, gateway_path, f"{FOREIGN}:1", stack.auth) == 421
    assert upgrade_status(stack.gateway_port, gateway_path, "127.0.0.1", stack.auth) == 101
    notebook_path = f"/api/kernels/{kernel_id}/channels"
    assert 400 <= upgrade_status(stack.notebook_port, notebook_path, f"{FOREIGN}:1") < 500


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_own_names_are_served(stack: Stack, host: str) -> None:
    url = f"http://{host}:{stack.gateway_port}/api/kernelspecs"
    assert requests.get(url, headers=stack.auth, timeout=10).status_code == 200
    assert requests.get(f"http://{host}:{stack.file_server_port}/health", timeout=10).ok
    assert requests.get(f"http://{host}:{stack.notebook_port}/api/status", timeout=10).ok
