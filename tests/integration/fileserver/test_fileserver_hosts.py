"""DNS rebinding: a real server refuses a foreign ``Host`` on every route, token or not."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.fileserver.fileserver_harness import FileServer, start_uvicorn

pytestmark = pytest.mark.integration

FOREIGN = "rebind.attacker.example:8080"
BOUNDARY = "----hosts-boundary"
MULTIPART = (
    f"--{BOUNDARY}\r\n"
    'Content-Disposition: form-data; name="file"; filename="victim.txt"\r\n\r\n'
    f"PWNED\r\n--{BOUNDARY}--\r\n"
).encode()


def _routes(name: str) -> list[tuple[str, str, dict[str, str], bytes | None]]:
    multipart = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    return [
        ("GET", "/health", {}, None),
        ("GET", "/openapi.json", {}, None),
        ("GET", "/docs", {}, None),
        ("GET", "/files", {}, None),
        ("GET", f"/files?path={name}", {}, None),
        ("GET", f"/files/{name}/victim.txt", {}, None),
        ("PUT", f"/files/{name}/victim.txt", {}, b"PWNED"),
        ("PUT", f"/files/{name}/new.txt", {}, b"PWNED"),
        ("POST", f"/files/{name}", multipart, MULTIPART),
        ("POST", "/files", multipart, MULTIPART),
        ("DELETE", f"/files/{name}/victim.txt", {}, None),
        ("GET", "/no-such-route", {}, None),
    ]


@pytest.mark.parametrize("token", [True, False], ids=["with-token", "without-token"])
def test_foreign_host_is_refused_on_every_route(
    file_server: FileServer, workdir: tuple[str, Path], token: bool
) -> None:
    name, path = workdir
    (path / "victim.txt").write_bytes(b"original")
    root_before = sorted(p.name for p in file_server.root.iterdir())
    for method, target, headers, body in _routes(name):
        response = file_server.request(
            method, target, headers={"Host": FOREIGN, **headers}, body=body, token=token
        )
        assert response.status == 421, f"{method} {target} -> {response.status}"
        assert response.headers["content-type"] == "application/json"
        assert "rebind.attacker.example" in response.json()["detail"]  # type: ignore[index]
        assert b"original" not in response.body and b"openapi" not in response.body
    assert sorted(p.name for p in path.iterdir()) == ["victim.txt"]
    assert (path / "victim.txt").read_bytes() == b"original"
    assert sorted(p.name for p in file_server.root.iterdir()) == root_before


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost:8080",
        "LOCALHOST:1",
        "127.0.0.1:8080",
        "[::1]:8080",
        "[::1]",
        "fileserver:8080",
    ],
)
def test_allowed_hosts_are_served(
    file_server: FileServer, workdir: tuple[str, Path], host: str
) -> None:
    name, path = workdir
    (path / "f.txt").write_bytes(b"hello")
    assert file_server.request("GET", "/health", headers={"Host": host}, token=False).status == 200
    response = file_server.request("GET", f"/files/{name}/f.txt", headers={"Host": host})
    assert (response.status, response.body) == (200, b"hello")


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /health HTTP/1.0\r\n\r\n", 400),
        (b"GET /files HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nHost: bad host\r\nConnection: close\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nHost: localhost.evil.example\r\nConnection: close\r\n\r\n", 421),
    ],
    ids=["no-host-health", "no-host-files", "two-hosts", "malformed", "lookalike"],
)
def test_missing_repeated_or_malformed_host(
    file_server: FileServer, head: bytes, status: int
) -> None:
    response = file_server.send_raw(head.replace(b"{token}", file_server.token.encode()))
    assert response.status == status, response.body


def test_the_compose_healthcheck_command_passes(file_server: FileServer) -> None:
    # docker-compose.yaml's healthcheck, verbatim but for the port.
    code = (
        "import urllib.request; "
        f"urllib.request.urlopen('http://127.0.0.1:{file_server.port}/health', timeout=3)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


@pytest.fixture(scope="module")
def configured_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServer]:
    base = tmp_path_factory.mktemp("fileserver-hosts")
    root = base / "shared"
    root.mkdir()
    server = start_uvicorn(
        root,
        base / "server.log",
        extra_env={
            "FILE_SERVER_ALLOWED_HOSTS": "files.example.org,[2001:db8::7]",
            "SANDBOX_ALLOWED_HOSTS": "sandbox.example.org, notebook-files.internal, .corp.example",
        },
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize(
    "host",
    [
        "files.example.org",
        "files.example.org:443",
        "[2001:db8::7]:8080",
        "sandbox.example.org",
        "notebook-files.internal:80",
        "files.team.corp.example:8080",
        "localhost:8080",
    ],
)
def test_configured_names_are_served(configured_server: FileServer, host: str) -> None:
    response = configured_server.request("GET", "/files", headers={"Host": host})
    assert response.status == 200


@pytest.mark.parametrize(
    "host", [FOREIGN, "example.org", "evil.files.example.org", "corp.example", "10.42.0.7"]
)
def test_configured_names_do_not_open_other_names(configured_server: FileServer, host: str) -> None:
    assert configured_server.request("GET", "/files", headers={"Host": host}).status == 421


@pytest.fixture(scope="module")
def other_loopback_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServer]:
    # Bound to 127.0.0.2, an address outside the default list, as a pod IP or container IP is.
    base = tmp_path_factory.mktemp("fileserver-loopback2")
    root = base / "shared"
    root.mkdir()
    server = start_uvicorn(root, base / "server.log", address="127.0.0.2")
    try:
        yield server
    finally:
        server.stop()


def test_the_address_a_request_arrived_on_is_a_name_of_the_server(
    other_loopback_server: FileServer,
) -> None:
    # What a Kubernetes probe of http://<pod IP>:<port>/health sends.
    server = other_loopback_server
    for host in (f"127.0.0.2:{server.port}", "127.0.0.2"):
        assert server.request("GET", "/health", headers={"Host": host}).status == 200
        assert server.request("GET", "/files", headers={"Host": host}).status == 200
    for host in ("127.0.0.3", FOREIGN):
        assert server.request("GET", "/health", headers={"Host": host}).status == 421


def test_a_bad_allow_list_stops_the_server_before_it_serves(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    root.mkdir()
    with pytest.raises(RuntimeError, match="is not a host name"):
        server = start_uvicorn(
            root, tmp_path / "server.log", extra_env={"FILE_SERVER_ALLOWED_HOSTS": "*.example.org"}
        )
        server.stop()  # reached only by a server that wrongly started
