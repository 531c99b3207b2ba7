"""The notebook's edges: foreign Host names, its container's limits, and where it can connect.

* DNS rebinding (SPEC §5a): a page the user visits reaches 127.0.0.1:<port> under its own name;
  every route refuses a Host that is not the notebook's, websocket upgrades included.  The
  request reaches the container through Docker's port forwarding (from the bridge, not from
  loopback), as a browser's would.
* The notebook container sits outside every kernel sandbox: read-only root, no capabilities,
  no privilege gain, memory and pids limits, no terminal, and no network beyond the gateway.
"""

from __future__ import annotations

import base64
import json
import os
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from .conftest import Stack, docker

pytestmark = pytest.mark.integration

FOREIGN = "rebind.attacker.example"
# Routes of every kind: the redirect at "/", pages, REST, public static files.
HTTP_PATHS = (
    "/",
    "/tree",
    "/notebooks/x.ipynb",
    "/api/status",
    "/api/contents",
    "/api/kernels",
    "/api/sessions",
    "/api/kernelspecs",
    "/static/favicons/favicon.ico",
)
# Public addresses for the egress check: each one this Docker host reaches must be closed.
EGRESS_TARGETS = (("1.1.1.1", 443), ("8.8.8.8", 53), ("151.101.0.223", 443), ("9.9.9.9", 443))

PROBE = """
import json, socket, sys
results = {}
for host, port in json.loads(sys.argv[1]):
    try:
        socket.create_connection((host, port), timeout=3).close()
        results[f"{host}:{port}"] = "open"
    except OSError as exc:
        results[f"{host}:{port}"] = type(exc).__name__
print(json.dumps(results))
"""


def _status_line(stack: Stack, path: str, host: str) -> str:
    """The status line the notebook answers to a websocket upgrade of ``path``."""
    address = urlsplit(stack.notebook_url)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Origin: http://{host}\r\n\r\n"
    )
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        sock.sendall(request.encode())
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0].decode()


def _status(line: str) -> int:
    return int(line.split()[1])


def _probe(container_args: list[str], targets: list[tuple[str, int]]) -> dict[str, str]:
    out = docker(*container_args, "python", "-c", PROBE, json.dumps(targets), timeout=60)
    return dict(json.loads(out))


def _inspect(stack: Stack) -> dict[str, Any]:
    return dict(json.loads(docker("inspect", stack.container("notebook")))[0])


@pytest.mark.parametrize("path", HTTP_PATHS)
def test_a_foreign_host_is_refused_on_every_route(stack: Stack, path: str) -> None:
    url = f"{stack.notebook_url}{path}"
    port = urlsplit(stack.notebook_url).port
    foreign = requests.get(url, headers={"Host": f"{FOREIGN}:{port}"}, allow_redirects=False)
    assert 400 <= foreign.status_code < 500, (foreign.status_code, foreign.text[:200])
    # The same request under the names the notebook is known by is answered.
    for name in (f"127.0.0.1:{port}", f"localhost:{port}", "[::1]", "notebook:8888"):
        local = requests.get(url, headers={"Host": name}, allow_redirects=False)
        assert local.status_code in (200, 301, 302, 404, 405), (name, local.status_code)


def test_a_foreign_host_cannot_start_a_kernel(stack: Stack) -> None:
    # What the rebinding page of the issue did: fetch /tree for the _xsrf cookie, then POST.
    port = urlsplit(stack.notebook_url).port
    api = requests.Session()
    api.headers["Host"] = f"{FOREIGN}:{port}"
    api.get(f"{stack.notebook_url}/tree", timeout=30)
    before = requests.get(f"{stack.notebook_url}/api/kernels", timeout=30).json()
    started = api.post(
        f"{stack.notebook_url}/api/kernels",
        data=json.dumps({"name": "python3"}),
        headers={"X-XSRFToken": api.cookies.get("_xsrf", "")},
        timeout=120,
    )
    assert 400 <= started.status_code < 500, started.status_code
    after = requests.get(f"{stack.notebook_url}/api/kernels", timeout=30).json()
    assert {k["id"] for k in after} <= {k["id"] for k in before}


@pytest.fixture
def kernel_id(stack: Stack) -> Iterator[str]:
    """A kernel started through the notebook (so its channels websocket exists)."""
    api = requests.Session()
    api.get(f"{stack.notebook_url}/tree", timeout=30)
    api.headers["X-XSRFToken"] = api.cookies.get("_xsrf", "")
    started = api.post(
        f"{stack.notebook_url}/api/kernels", data=json.dumps({"name": "python3"}), timeout=120
    )
    assert started.status_code == 201, started.text
    try:
        yield str(started.json()["id"])
    finally:
        api.delete(f"{stack.notebook_url}/api/kernels/{started.json()['id']}", timeout=60)


@pytest.mark.parametrize("route", ["events", "kernel channels"])
def test_a_foreign_host_cannot_open_a_websocket(stack: Stack, route: str, request: Any) -> None:
    if route == "events":
        path = "/api/events/subscribe"
    else:
        path = f"/api/kernels/{request.getfixturevalue('kernel_id')}/channels"
    port = urlsplit(stack.notebook_url).port
    refused = _status_line(stack, path, f"{FOREIGN}:{port}")
    assert 400 <= _status(refused) < 500, refused
    # Under the notebook's own name the same upgrade succeeds: the refusal is the Host's.
    accepted = _status_line(stack, path, f"127.0.0.1:{port}")
    assert _status(accepted) == 101, accepted


def test_the_notebook_container_is_hardened(stack: Stack) -> None:
    config = _inspect(stack)["HostConfig"]
    assert config["ReadonlyRootfs"] is True
    assert config["CapDrop"] == ["ALL"] and not config["CapAdd"]
    assert "no-new-privileges:true" in config["SecurityOpt"]
    assert config["Memory"] > 0 and config["PidsLimit"] > 0
    assert not config["Privileged"]
    notebook = stack.container("notebook")
    # Read-only root; /tmp and the notebook root are the only writable places.
    root = docker("exec", notebook, "sh", "-c", "touch /opt/x 2>&1; echo $?", check=False)
    assert root.strip().splitlines()[-1] != "0", root
    for writable in ("/tmp", "/home/jovyan"):
        docker("exec", notebook, "sh", "-c", f"touch {writable}/.probe && rm {writable}/.probe")
    # No terminal: the package is not installed and the API does not exist.
    find = "import importlib.util as u; print([m for m in %r if u.find_spec(m)])"
    installed = docker(
        "exec", notebook, "python", "-c", find % (["terminado", "jupyter_server_terminals"],)
    )
    assert installed.strip() == "[]", installed
    assert requests.get(f"{stack.notebook_url}/api/terminals", timeout=30).status_code == 404


def test_the_notebook_reaches_the_gateway_and_no_other_service(stack: Stack) -> None:
    inside = _probe(
        ["exec", stack.container("notebook")], [("gateway", 8889), ("fileserver", 8080)]
    )
    assert inside["gateway:8889"] == "open", inside
    # The other services of the stack are out of reach (the name does not even resolve).
    assert inside["fileserver:8080"] != "open", inside


def test_the_notebook_has_no_egress(stack: Stack) -> None:
    # Public addresses: closed from the notebook, for every one that a container on the
    # stack's ordinary network reaches from this Docker host.
    image = _inspect(stack)["Config"]["Image"]
    control = _probe(
        ["run", "--rm", "--network", f"{stack.project}_default", image], list(EGRESS_TARGETS)
    )
    reachable = [target for target, state in control.items() if state == "open"]
    if not reachable:
        pytest.skip(f"this Docker host has no egress to compare with: {control}")
    inside = _probe(["exec", stack.container("notebook")], list(EGRESS_TARGETS))
    assert [target for target in reachable if inside[target] == "open"] == [], inside
