"""The one Host allow-list (``sandbox_gateway.http.hosts``): its rule, and its tornado adapter on a
real tornado server bound to 127.0.0.2, an address that is not a loopback name (as a pod IP)."""

from __future__ import annotations

import ast
import asyncio
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tornado import httpserver, netutil, web, websocket

from sandbox_gateway.http import hosts

REPO = Path(__file__).resolve().parents[3]
ALLOWED = hosts.allowed_hosts({"SANDBOX_ALLOWED_HOSTS": "gateway, .svc.cluster.local"})
FOREIGN = "rebind.attacker.example"


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
    assert hosts.split_host(value) == expected


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
        "evil:8889:1",
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
    assert hosts.split_host(value) is None


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("Files.Example.org.", "files.example.org"),
        (" [2001:DB8:0::1] ", "[2001:db8::1]"),
        ("10.0.0.5", "10.0.0.5"),
        (".SVC.cluster.local", ".svc.cluster.local"),
        (".example.org.", ".example.org"),
        (".internal", ".internal"),
    ],
)
def test_allow_list_entries_are_normalised(entry: str, expected: str) -> None:
    assert hosts.normalise_allowed_host(entry) == expected


@pytest.mark.parametrize(
    "entry",
    [
        "gateway:8889",
        "*",
        "*.example.org",
        "https://files.example.org",
        "a/b",
        "::1",
        ".",
        "..example.org",
        ".a..b",
        ".[::1]",
        ".example.org:80",
        # A domain entry ending in a number would match IPv4 literals (10.1.0.5, 10.2.0.5, ...).
        ".0.5",
        ".5",
    ],
)
def test_allow_list_entries_that_are_not_a_name_are_refused(entry: str) -> None:
    with pytest.raises(ValueError, match=r"is not a host name, IP literal or \.domain"):
        hosts.normalise_allowed_host(entry)


def test_allowed_hosts_read_the_environment_and_name_it_in_errors() -> None:
    assert hosts.allowed_hosts({}) == {"localhost", "127.0.0.1", "[::1]"}
    listed = hosts.allowed_hosts({"SANDBOX_ALLOWED_HOSTS": " gateway,, .SVC.cluster.local,"})
    assert listed == {"localhost", "127.0.0.1", "[::1]", "gateway", ".svc.cluster.local"}
    with pytest.raises(ValueError, match=r"^SANDBOX_ALLOWED_HOSTS: 'gateway:8889' is not a host"):
        hosts.allowed_hosts({"SANDBOX_ALLOWED_HOSTS": "ok.example.org,gateway:8889"})


@pytest.mark.parametrize(
    ("values", "status"),
    [
        ([], 400),
        (["localhost", "localhost"], 400),
        (["local host"], 400),
        ([f"{FOREIGN}:8080"], 421),
        (["localhost.attacker.example"], 421),
        (["gateway.attacker.example"], 421),
        (["svc.cluster.local"], 421),
        (["evilsvc.cluster.local"], 421),
        (["svc.cluster.local.attacker.example"], 421),
        (["127.0.0.1.nip.io"], 421),
        (["[::ffff:127.0.0.1]"], 421),
        (["0.0.0.0:8080"], 421),
        # An IP literal other than the address the request arrived on (10.1.2.3 here).
        (["10.42.0.7:8889"], 421),
        (["[fd00::7]"], 421),
    ],
)
def test_refusal(values: list[str], status: int) -> None:
    refused = hosts.refusal(values, ALLOWED, "10.1.2.3")
    assert refused is not None and refused[0] == status


@pytest.mark.parametrize(
    "value",
    [
        "localhost",
        "LOCALHOST:1",
        "127.0.0.1:8889",
        "[::1]",
        "[0::1]:8889",
        "gateway:8889",
        "mjs-gateway.sandbox.svc.cluster.local:8889",
        "a.b.svc.cluster.local.",
        "10.1.2.3:8889",  # the local address: a kubelet probe, a Prometheus scrape of the pod IP
    ],
)
def test_own_names_pass(value: str) -> None:
    assert hosts.refusal([value], ALLOWED, "10.1.2.3") is None


def test_the_refusal_names_the_setting_and_bounds_the_echo() -> None:
    refused = hosts.refusal(["x" * 500], ALLOWED)
    assert refused is not None
    status, detail = refused
    assert status == 421 and "SANDBOX_ALLOWED_HOSTS" in detail and len(detail) < 250
    refused = hosts.refusal([FOREIGN], ALLOWED, setting="FILE_SERVER_ALLOWED_HOSTS")
    assert refused is not None and "add it to FILE_SERVER_ALLOWED_HOSTS" in refused[1]


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (("10.1.2.3", 8080), "10.1.2.3"),
        (["10.1.2.3", 8080], "10.1.2.3"),
        (("::1", 8080, 0, 0), "[::1]"),
        (("fd00:0::5", 8080), "[fd00::5]"),
        (("::ffff:10.1.2.3", 8080, 0, 0), "10.1.2.3"),
        (None, None),
        ((), None),
        ("/run/gateway.sock", None),
        (("/run/fileserver.sock", None), None),
        (b"\0abstract", None),
    ],
)
def test_local_address_name(address: object, expected: str | None) -> None:
    assert hosts.local_address_name(address) == expected


def test_the_core_imports_the_standard_library_only() -> None:
    # The file server imports it without tornado or Enterprise Gateway installed.
    code = (
        "import sys; before = set(sys.modules)\n"
        "import sandbox_gateway.http.hosts\n"
        "new = {name.partition('.')[0] for name in set(sys.modules) - before}\n"
        "print(sorted(new - set(sys.stdlib_module_names) - {'sandbox_gateway'}))"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", f"import sys; sys.path.insert(0, {str(REPO)!r})\n{code}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert out.strip() == "[]"


def test_the_notebook_config_installs_this_module() -> None:
    # The notebook runs only in its image (tests/e2e/docker); its config must call this apply().
    config = REPO / "sandbox_notebook" / "etc" / "jupyter_notebook_config.py"
    tree = ast.parse(config.read_text())
    imported = [
        node
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        and node.module == "sandbox_gateway.http"
        and any(alias.name == "hosts" and alias.asname is None for alias in node.names)
    ]
    calls = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Call)
        and ast.unparse(node.value.func) == "hosts.apply"
    ]
    assert imported and calls, "the notebook config must call sandbox_gateway.http.hosts.apply()"


# The adapter, on a real tornado server.

ADDRESS = "127.0.0.2"
served: list[str] = []


class Api(web.RequestHandler):
    def get(self) -> None:
        served.append("GET")
        self.write({"ok": True})

    def post(self) -> None:
        served.append("POST")
        self.write({"ok": True})


class Echo(websocket.WebSocketHandler):
    def on_message(self, message: str | bytes) -> None:
        self.write_message(message)


@pytest.fixture(scope="module")
def server_port() -> Iterator[int]:
    # apply() patches tornado's Application class; the original comes back after this module.
    original = web.Application.find_handler
    hosts.apply({"SANDBOX_ALLOWED_HOSTS": "gateway, .svc.cluster.local"})
    loop = asyncio.new_event_loop()
    sockets = netutil.bind_sockets(0, ADDRESS)
    started = threading.Event()
    servers: list[httpserver.HTTPServer] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        # xsrf_cookies as in jupyter_server: a refusal must not turn into its 403.
        app = web.Application([(r"/api", Api), (r"/ws", Echo)], xsrf_cookies=True)
        servers.append(httpserver.HTTPServer(app))
        servers[0].add_sockets(sockets)
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield int(sockets[0].getsockname()[1])
    finally:

        async def close() -> None:
            servers[0].stop()
            await servers[0].close_all_connections()

        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        web.Application.find_handler = original  # type: ignore[method-assign]


def exchange(port: int, head: str) -> tuple[int, dict[str, str], bytes]:
    """Send ``head`` (a request without body) to the server; its status, headers and body."""
    with socket.create_connection((ADDRESS, port), timeout=10) as sock:
        sock.sendall(head.encode("latin-1"))
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        top, _, body = answer.partition(b"\r\n\r\n")
        lines = top.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        while len(body) < int(headers.get("Content-Length", "0")):
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return int(lines[0].split()[1]), headers, body


def get(port: int, host: str, method: str = "GET", extra: str = "") -> tuple[int, bytes]:
    status, _, body = exchange(port, f"{method} /api HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n")
    return status, body


@pytest.mark.parametrize(
    "host",
    [
        FOREIGN,
        f"{FOREIGN}:8889",
        "gateway.attacker.example",
        "10.42.0.7:8889",
        "127.0.0.3",
        "[::ffff:127.0.0.2]",
    ],
)
def test_a_foreign_name_gets_421_in_tornados_error_shape(server_port: int, host: str) -> None:
    served.clear()
    status, headers, body = exchange(
        server_port, f"GET /api HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    assert status == 421
    assert headers["Content-Type"] == "application/json"
    answer = json.loads(body)
    assert answer["reason"] == "Misdirected Request"
    assert host[:20] in answer["message"] and "SANDBOX_ALLOWED_HOSTS" in answer["message"]
    assert served == []


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "127.0.0.1:8889",
        "[::1]:8889",
        "gateway:8889",
        "mjs-gateway.sandbox.svc.cluster.local:8889",
    ],
)
def test_own_names_are_served(server_port: int, host: str) -> None:
    assert get(server_port, host) == (200, b'{"ok": true}')


def test_the_address_the_request_arrived_on_is_served(server_port: int) -> None:
    # What a kubelet probe or a Prometheus scrape of http://<pod IP>:<port>/ sends.
    for host in (f"{ADDRESS}:{server_port}", ADDRESS):
        assert get(server_port, host) == (200, b'{"ok": true}')


def test_a_foreign_post_is_refused_before_its_body_and_its_xsrf_check(server_port: int) -> None:
    served.clear()
    # No body follows: the answer comes without waiting for it, and it is the refusal, not
    # the 403 of the missing _xsrf token.
    status, _ = get(server_port, FOREIGN, "POST", "Content-Length: 100000000\r\n")
    assert status == 421
    assert served == []


@pytest.mark.parametrize("method", ["HEAD", "PUT", "DELETE", "OPTIONS", "PROPFIND"])
def test_every_method_gets_the_refusal(server_port: int, method: str) -> None:
    assert get(server_port, FOREIGN, method)[0] == 421


def test_a_request_without_host_gets_400(server_port: int) -> None:
    # HTTP/1.0 may omit Host, and tornado lets it through: the allow-list refuses it.
    status, _, body = exchange(server_port, "GET /api HTTP/1.0\r\n\r\n")
    assert status == 400
    assert json.loads(body)["message"] == "the request has no Host header"


@pytest.mark.parametrize(
    "head",
    [
        "GET /api HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /api HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n",
        "GET /api HTTP/1.1\r\nHost: bad host\r\nConnection: close\r\n\r\n",
    ],
    ids=["no-host-1.1", "two-hosts", "malformed"],
)
def test_missing_repeated_or_malformed_host_gets_400(server_port: int, head: str) -> None:
    # Tornado refuses these itself (before the application); the rule is the same.
    assert exchange(server_port, head)[0] == 400


def upgrade(port: int, host: str) -> int:
    return exchange(
        port,
        f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )[0]


def test_websocket_upgrades_are_routed_through_the_same_rule(server_port: int) -> None:
    assert upgrade(server_port, f"{FOREIGN}:1") == 421
    assert upgrade(server_port, "10.42.0.7") == 421
    assert upgrade(server_port, f"{ADDRESS}:{server_port}") == 101
    assert upgrade(server_port, "localhost") == 101


def test_a_bad_allow_list_patches_nothing() -> None:
    before = web.Application.find_handler
    # SystemExit: traitlets logs and skips a config file that raises an Exception.
    with pytest.raises(SystemExit, match=r"^invalid setting: SANDBOX_ALLOWED_HOSTS: '\*\.exa"):
        hosts.apply({"SANDBOX_ALLOWED_HOSTS": "*.example.org"})
    assert web.Application.find_handler is before
