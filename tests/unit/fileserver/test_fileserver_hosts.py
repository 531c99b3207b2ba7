"""The Host allow-list: parsing, and the middleware in front of the whole app (no server)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.types import Message

from fileserver.app import create_app
from fileserver.hosts import DEFAULT_ALLOWED_HOSTS, local_address_name, refusal, split_host
from fileserver.settings import Settings

pytestmark = pytest.mark.unit

ALLOWED = frozenset(DEFAULT_ALLOWED_HOSTS)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("localhost", ("localhost", None)),
        ("LocalHost:8080", ("localhost", "8080")),
        ("localhost.:8080", ("localhost", "8080")),
        ("127.0.0.1:8080", ("127.0.0.1", "8080")),
        ("[::1]", ("[::1]", None)),
        ("[0:0:0:0:0:0:0:1]:80", ("[::1]", "80")),
        ("fileserver:8080", ("fileserver", "8080")),
        ("localhost:", ("localhost", "")),
        ("files.example.org", ("files.example.org", None)),
        ("under_score.internal:1", ("under_score.internal", "1")),
    ],
)
def test_split_host(value: str, expected: tuple[str, str | None]) -> None:
    assert split_host(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        ":8080",
        "::1",
        "[::1",
        "[::1]x",
        "[not-ipv6]",
        "[fe80::1%25eth0]",
        "localhost:80:80",
        "localhost:port",
        "localhost:123456",
        "local host",
        "a..b",
        ".localhost",
        "user@localhost",
        "localhost/path",
        "http://localhost",
        "*",
        "é.example",
    ],
)
def test_split_host_refuses_malformed_values(value: str) -> None:
    assert split_host(value) is None


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([], 400),
        ([(b"host", b"localhost"), (b"host", b"localhost")], 400),
        ([(b"host", b"local host")], 400),
        ([(b"host", b"rebind.attacker.example:8080")], 421),
        ([(b"host", b"localhost.attacker.example")], 421),
        ([(b"host", b"127.0.0.1.nip.io")], 421),
        ([(b"host", b"[::ffff:127.0.0.1]")], 421),
        ([(b"host", b"0.0.0.0:8080")], 421),
        ([(b"host", b"fileserver.attacker.example")], 421),
    ],
)
def test_refusal(headers: list[tuple[bytes, bytes]], status: int) -> None:
    refused = refusal(headers, ALLOWED)
    assert refused is not None and refused[0] == status


@pytest.mark.parametrize(
    "host", ["localhost", "localhost:1", "127.0.0.1:8080", "[::1]:8080", "fileserver:8080"]
)
def test_allowed_hosts_pass(host: str) -> None:
    assert refusal([(b"accept", b"*/*"), (b"host", host.encode())], ALLOWED) is None


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        (("10.1.2.3", 8080), "10.1.2.3"),
        (("::1", 8080), "[::1]"),
        (("fd00:0::5", 8080), "[fd00::5]"),
        (("::ffff:10.1.2.3", 8080), "10.1.2.3"),
        (None, None),
        (("/run/fileserver.sock", None), None),
    ],
)
def test_local_address_name(server: tuple[str, int] | None, expected: str | None) -> None:
    assert local_address_name(server) == expected


def test_the_address_the_request_arrived_on_is_allowed() -> None:
    # A kubelet probe of http://<pod IP>:8080/health sends the pod IP as Host.
    assert refusal([(b"host", b"10.1.2.3:8080")], ALLOWED, "10.1.2.3") is None
    assert refusal([(b"host", b"[fd00::5]:8080")], ALLOWED, "[fd00::5]") is None
    refused = refusal([(b"host", b"10.9.9.9:8080")], ALLOWED, "10.1.2.3")
    assert refused is not None and refused[0] == 421


@pytest.fixture
def app_client(tmp_path: Path) -> httpx.AsyncClient:
    (tmp_path / "f.txt").write_bytes(b"content")
    app = create_app(
        Settings(shared_data_dir=tmp_path, token="tok", sandbox_allowed_hosts="files.example.org")
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
            assert "rebind.attacker.example" in response.json()["detail"]
    assert (tmp_path / "f.txt").read_bytes() == b"content"


async def test_configured_and_default_hosts_are_served(app_client: httpx.AsyncClient) -> None:
    async with app_client:
        for host in (
            "localhost:8080",
            "127.0.0.1",
            "[::1]:1",
            "fileserver:8080",
            "FILES.example.org",
        ):
            response = await app_client.get(
                "/files/f.txt", headers={"Host": host, "Authorization": "Bearer tok"}
            )
            assert (response.status_code, response.content) == (200, b"content"), host


async def test_missing_host_is_400_and_a_foreign_websocket_is_closed(tmp_path: Path) -> None:
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

    sent.clear()

    async def receive_ws() -> Message:
        return {"type": "websocket.connect"}

    ws_scope = {**scope, "type": "websocket", "headers": [(b"host", b"rebind.attacker.example")]}
    await app(ws_scope, receive_ws, send)
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "Host not allowed"}]
