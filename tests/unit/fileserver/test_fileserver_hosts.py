"""The Host allow-list's middleware in front of the whole app (no server)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.types import Message

from fileserver import hosts
from fileserver.app import create_app
from fileserver.settings import Settings
from sandbox_gateway.http import hosts as rule

pytestmark = pytest.mark.unit


def test_the_rule_is_the_gateways() -> None:
    # Parsing and deciding are tested with the rule (tests/unit/gateway/test_hosts.py); the
    # file server adds only its service name to the loopback names.
    assert hosts.refusal is rule.refusal
    assert hosts.local_address_name is rule.local_address_name
    assert hosts.DEFAULT_ALLOWED_HOSTS[:-1] == rule.LOOPBACK_HOSTS
    assert hosts.DEFAULT_ALLOWED_HOSTS[-1] == "fileserver"


@pytest.fixture
def app_client(tmp_path: Path) -> httpx.AsyncClient:
    (tmp_path / "f.txt").write_bytes(b"content")
    app = create_app(
        Settings(
            shared_data_dir=tmp_path,
            token="tok",
            sandbox_allowed_hosts="files.example.org",
            allowed_hosts=".corp.example",
        )
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")


ROUTES = [
    ("GET", "/health"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/files"),
    ("GET", "/files/f.txt"),
    ("PUT", "/files/f.txt"),
    ("POST", "/files"),
    ("DELETE", "/files/f.txt"),
    ("GET", "/no-such-route"),
]


@pytest.mark.parametrize(("method", "url"), ROUTES)
async def test_foreign_host_is_refused_on_every_route(
    app_client: httpx.AsyncClient, tmp_path: Path, method: str, url: str
) -> None:
    async with app_client:
        for token in (True, False):
            headers = {"Host": "rebind.attacker.example:8080"}
            if token:
                headers["Authorization"] = "Bearer tok"
            response = await app_client.request(method, url, headers=headers, content=b"pwned")
            assert response.status_code == 421
            detail = response.json()["detail"]
            assert "rebind.attacker.example" in detail and "FILE_SERVER_ALLOWED_HOSTS" in detail
    assert (tmp_path / "f.txt").read_bytes() == b"content"


async def test_configured_and_default_hosts_are_served(app_client: httpx.AsyncClient) -> None:
    async with app_client:
        for host in (
            "localhost:8080",
            "127.0.0.1",
            "[::1]:1",
            "fileserver:8080",
            "FILES.example.org",
            "files.team.CORP.example:443",
        ):
            response = await app_client.get(
                "/files/f.txt", headers={"Host": host, "Authorization": "Bearer tok"}
            )
            assert (response.status_code, response.content) == (200, b"content"), host
        for host in (
            "corp.example",
            "files.example.org.attacker.example",
            "fileserver.attacker.example",
            "10.42.0.7",
        ):
            response = await app_client.get("/health", headers={"Host": host})
            assert response.status_code == 421, host


async def test_raw_requests_and_a_foreign_websocket(tmp_path: Path) -> None:
    app = create_app(Settings(shared_data_dir=tmp_path, token="t"))
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.0",
        "method": "GET",
        "scheme": "http",
        "path": "/health",
        "raw_path": b"/health",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8080),
    }
    await app(scope, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 400
    assert b"no Host header" in sent[1]["body"]

    # The address the request arrived on (a kubelet probe of the pod IP), and no other IP.
    for host, status in [(b"10.1.2.3:8080", 200), (b"10.9.9.9:8080", 421)]:
        sent.clear()
        probe = {**scope, "headers": [(b"host", host)], "server": ("10.1.2.3", 8080)}
        await app(probe, receive, send)
        assert sent[0]["status"] == status, host

    sent.clear()
    await app({**scope, "headers": [(b"host", b"localhost")] * 2}, receive, send)
    assert sent[0]["status"] == 400 and b"more than one Host" in sent[1]["body"]

    sent.clear()

    async def receive_ws() -> Message:
        return {"type": "websocket.connect"}

    ws_scope = {**scope, "type": "websocket", "headers": [(b"host", b"rebind.attacker.example")]}
    await app(ws_scope, receive_ws, send)
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "Host not allowed"}]
