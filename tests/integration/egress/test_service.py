"""The egress process as it runs in its container: configured by its environment, granted by
the gateway's table on its control port, counted in its metrics."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .conftest import KERNEL_A, KERNEL_B, ORIGIN, Platform
from .test_proxy import exchange

pytestmark = pytest.mark.integration

SERVICE = "127.0.0.21"
CONTROL = f"http://{SERVICE}:8900"
TOKEN = "egress-control-token-for-tests"


def environment(platform: Platform, state: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "SANDBOX_EGRESS_LISTEN": SERVICE,
        "SANDBOX_EGRESS_ALLOW": "allowed.test,also.test:8443",
        "SANDBOX_EGRESS_RESOLVE": f"allowed.test={ORIGIN},also.test={ORIGIN}",
        "SANDBOX_EGRESS_ORIGIN_CA": str(platform.origin_ca),
        "SANDBOX_EGRESS_CONTROL_TOKEN": TOKEN,
        "SANDBOX_EGRESS_STATE": str(state),
        **extra,
    }


@pytest.fixture(scope="module")
def service(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    state = tmp_path_factory.mktemp("egress-state")
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox_gateway.egress"],
        env=environment(platform, state),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != "egress ready":
        process.kill()
        pytest.fail(f"the egress process did not start: {line}{process.communicate()[1]}")
    try:
        yield state / "ca" / "ca.pem"
    finally:
        process.terminate()
        process.communicate(timeout=10)


def put(table: object, token: str = TOKEN) -> requests.Response:
    return requests.put(
        f"{CONTROL}/grants", json=table, headers={"Authorization": f"token {token}"}, timeout=10
    )


def fetch(ca: Path, name: str, source: str = KERNEL_A, port: int = 443) -> int:
    raw = socket.create_connection((SERVICE, port), timeout=10, source_address=(source, 0))
    context = ssl.create_default_context(cafile=str(ca))
    with context.wrap_socket(raw, server_hostname=name) as sock:
        return exchange(sock, f"GET / HTTP/1.1\r\nHost: {name}\r\n\r\n")[0]


def metrics() -> str:
    answer = requests.get(f"{CONTROL}/metrics", headers={"Authorization": f"token {TOKEN}"})
    assert answer.status_code == 200
    return answer.text


def grant_a(allow: str = "allowed.test") -> dict[str, dict[str, str]]:
    return {KERNEL_A: {"session": "kernel-a", "allow": allow, "answer": SERVICE}}


def test_the_table_grants_and_revokes(platform: Platform, service: Path) -> None:
    assert put(grant_a()).json() == {"grants": 1}
    assert fetch(service, "allowed.test") == 200
    assert fetch(service, "allowed.test", source=KERNEL_B) == 403
    shown = metrics()
    assert 'sandbox_egress_connections_total{decision="allowed",reason=""}' in shown
    assert 'sandbox_egress_connections_total{decision="refused",reason="no_grant"}' in shown
    assert 'sandbox_egress_bytes_total{direction="in",session="kernel-a"}' in shown
    assert put({}).json() == {"grants": 0}
    assert fetch(service, "allowed.test") == 403
    assert 'session="kernel-a"' not in metrics()  # a revoked session's series are gone


@pytest.mark.parametrize(
    ("table", "why"),
    [
        (grant_a("other.test"), "not within"),
        (grant_a("10.0.0.1"), "is an address"),
        ({"not-an-address": {"session": "s", "allow": "", "answer": SERVICE}}, "does not appear"),
        ({KERNEL_A: {"session": "s", "allow": ""}}, "a grant is"),
        ([KERNEL_A], "JSON object"),
    ],
)
def test_a_bad_table_changes_nothing(
    platform: Platform, service: Path, table: object, why: str
) -> None:
    assert put(grant_a()).status_code == 200
    answer = put(table)
    assert answer.status_code == 400 and why in answer.json()["message"]
    assert fetch(service, "allowed.test") == 200  # the table before it still holds
    put({})


def test_the_control_port_needs_the_token(service: Path) -> None:
    assert put(grant_a(), token="wrong-token-wrong-token").status_code == 401
    assert requests.get(f"{CONTROL}/metrics", timeout=10).status_code == 401
    assert requests.put(f"{CONTROL}/grants", data=b"{}", timeout=10).status_code == 401
    assert requests.get(f"{CONTROL}/health", timeout=10).text == "ok\n"


@pytest.mark.parametrize(
    ("setting", "value", "said"),
    [
        ("SANDBOX_EGRESS_CONTROL_TOKEN", "short", "SANDBOX_EGRESS_CONTROL_TOKEN must be set"),
        ("SANDBOX_EGRESS_ALLOW", "1.2.3.4", "is an address"),
        ("SANDBOX_EGRESS_DNS", "resolver.example", "address:port"),
        ("SANDBOX_EGRESS_RESOLVE", "a.test", "is not name=address"),
        ("SANDBOX_EGRESS_DENY", "10.0.0.0/33", "SANDBOX_EGRESS_DENY"),
    ],
)
def test_a_bad_setting_stops_it_with_one_line(
    platform: Platform, tmp_path: Path, setting: str, value: str, said: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sandbox_gateway.egress"],
        env=environment(platform, tmp_path, **{setting: value}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("sandbox egress: invalid setting: ") and said in line


def test_it_serves_every_port_of_its_ceiling(platform: Platform, service: Path) -> None:
    put({KERNEL_B: {"session": "kernel-b", "allow": "also.test:8443", "answer": SERVICE}})
    assert fetch(service, "also.test", source=KERNEL_B, port=8443) == 200
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((SERVICE, 9443), timeout=5)
    put({})
