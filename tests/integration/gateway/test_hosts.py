"""DNS rebinding: the gateway answers only to its own names, on HTTP and on websocket upgrades.

The rule itself, and its tornado adapter on a plain tornado server, are unit-tested in
tests/unit/gateway/test_hosts.py; here it runs in Enterprise Gateway with the sandbox's config.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from jupyter_kernel_client import GatewayKernelSession
from testkit.gateway import Gateway
from testkit.http import upgrade_status

FOREIGN = "rebind.attacker.example"
# A loopback address that is none of the loopback names: the gateway bound to it stands for a pod
# on its pod IP.
OTHER_ADDRESS = "127.0.0.2"


@pytest.fixture(scope="module")
def named_gateway() -> Iterator[Gateway]:
    gateway = Gateway(env={"SANDBOX_ALLOWED_HOSTS": "gateway, .svc.cluster.local"}).start()
    try:
        yield gateway
    finally:
        gateway.stop()


def get(gateway: Gateway, path: str, host: str) -> requests.Response:
    return requests.get(gateway.http + path, headers={"Host": host}, timeout=10)


@pytest.mark.parametrize(
    "host",
    [
        f"{FOREIGN}:8889",
        FOREIGN,
        "localhost.attacker.example",
        "gateway.attacker.example",
        "svc.cluster.local",
        "svc.cluster.local.attacker.example",
        "10.42.0.7:8889",  # an IP literal other than the address the request arrived on
        "[::ffff:127.0.0.1]",
    ],
)
def test_foreign_host_is_refused(named_gateway: Gateway, host: str) -> None:
    for path in ("/api/kernels", "/api/kernelspecs", "/api", "/no/such/route"):
        response = get(named_gateway, path, host)
        assert response.status_code == 421, (path, host, response.text)
        assert response.json()["reason"] == "Misdirected Request"
        assert "SANDBOX_ALLOWED_HOSTS" in response.json()["message"]
        assert "Traceback" not in response.text


@pytest.mark.parametrize("host", ["evil:8889:1", "", "bad host"])
def test_malformed_host_is_refused(named_gateway: Gateway, host: str) -> None:
    assert get(named_gateway, "/api/kernelspecs", host).status_code == 400


def test_foreign_host_cannot_start_a_kernel(named_gateway: Gateway) -> None:
    before = len(named_gateway.kernels())
    response = requests.post(
        named_gateway.http + "/api/kernels",
        json={"name": "python3", "env": {"KERNEL_USERNAME": "x"}},
        headers={"Host": f"{FOREIGN}:{named_gateway.port}"},
        timeout=30,
    )
    assert response.status_code == 421
    assert len(named_gateway.kernels()) == before


def test_websocket_upgrade_with_a_foreign_host_is_refused(named_gateway: Gateway) -> None:
    with GatewayKernelSession(named_gateway.http, named_gateway.ws, "python3") as session:
        path = f"/api/kernels/{session.kernel_id}/channels"
        assert upgrade_status(named_gateway.port, path, f"{FOREIGN}:1") == 421
        # The same upgrade under an allowed name is served.
        assert upgrade_status(named_gateway.port, path, f"127.0.0.1:{named_gateway.port}") == 101


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost:8889",
        "LOCALHOST:1",
        "127.0.0.1:8889",
        "[::1]:8889",
        "[::1]",
        "gateway:8889",
        "mjs-gateway.sandbox.svc.cluster.local:8889",
    ],
)
def test_own_names_are_served(named_gateway: Gateway, host: str) -> None:
    assert get(named_gateway, "/api/kernelspecs", host).status_code == 200


def test_only_configured_names_are_added(gateway: Gateway) -> None:
    # The shared test gateway configures no names: the service name is foreign to it.
    assert get(gateway, "/api/kernelspecs", "gateway:8889").status_code == 421
    assert get(gateway, "/api/kernelspecs", "localhost").status_code == 200


@pytest.fixture(scope="module")
def other_address_gateway() -> Iterator[Gateway]:
    gateway = Gateway(ip=OTHER_ADDRESS).start()
    try:
        yield gateway
    finally:
        gateway.stop()


def test_the_address_a_request_arrived_on_is_a_name_of_the_gateway(
    other_address_gateway: Gateway,
) -> None:
    # What a kubelet probe or a Prometheus scrape of http://<pod IP>:<port>/ sends.
    gateway = other_address_gateway
    for host in (f"{OTHER_ADDRESS}:{gateway.port}", OTHER_ADDRESS, "localhost"):
        assert get(gateway, "/api/kernelspecs", host).status_code == 200, host
    for host in ("127.0.0.3", f"10.42.0.7:{gateway.port}", FOREIGN):
        assert get(gateway, "/api/kernelspecs", host).status_code == 421, host
