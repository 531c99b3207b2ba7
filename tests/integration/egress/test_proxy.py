"""The enforcement point against the project's own test hosts: what a granted kernel reaches, and
every way out it is refused, each checked at the origin (nothing arrived) and in the decisions.

A kernel here is a socket with its source address; the proxy sees what a kernel container's
connection would show it.  See ``conftest`` for the addresses.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

import dns.message
import dns.query
import dns.rcode
import pytest

from .conftest import EGRESS, KERNEL_A, KERNEL_B, STRANGER, Platform

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def fresh(platform: Platform) -> Iterator[None]:
    platform.grant(KERNEL_A, "session-a", "allowed.test")
    platform.grant(KERNEL_B, "session-b", "also.test:8443")
    platform.origin.requests.clear()
    platform.upstream.asked.clear()
    platform.recorder.decisions.clear()
    yield
    for source in (KERNEL_A, KERNEL_B, STRANGER):
        platform.revoke(source)


def connect(port: int, source: str) -> socket.socket:
    return socket.create_connection((EGRESS, port), timeout=10, source_address=(source, 0))


def exchange(sock: socket.socket | ssl.SSLSocket, head: str) -> tuple[int, bytes]:
    sock.sendall(head.encode())
    response = http.client.HTTPResponse(sock)  # type: ignore[arg-type]
    response.begin()
    return response.status, response.read()


def https(
    platform: Platform,
    sni: str | None,
    host: str | None = None,
    *,
    source: str = KERNEL_A,
    port: int = 443,
    path: str = "/",
) -> tuple[int, Any]:
    sock = platform.kernel_tls().wrap_socket(
        connect(port, source), server_hostname=sni, do_handshake_on_connect=True
    )
    with sock:
        status, body = exchange(sock, f"GET {path} HTTP/1.1\r\nHost: {host or sni}\r\n\r\n")
    return status, json.loads(body) if status == 200 else body.decode()


def nothing_left(platform: Platform) -> None:
    assert platform.origin.requests == [], "a refused request reached the origin"


def reasons(platform: Platform) -> list[str]:
    return [reason for decision, reason in platform.recorder.decisions if decision == "refused"]


# --- allowed ----------------------------------------------------------------------------------


def test_an_allowed_name_over_https(platform: Platform) -> None:
    status, seen = https(platform, "allowed.test")
    assert status == 200
    assert seen == {
        "method": "GET",
        "path": "/",
        "host": "allowed.test",
        "tls": True,
        "sni": "allowed.test",
        "body": 0,
    }
    assert ("allowed", "") in platform.recorder.decisions


def test_an_allowed_name_over_http(platform: Platform) -> None:
    with connect(80, KERNEL_A) as sock:
        status, body = exchange(sock, "GET /x HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
    assert status == 200 and json.loads(body)["tls"] is False


def test_several_requests_on_one_connection(platform: Platform) -> None:
    sock = platform.kernel_tls().wrap_socket(connect(443, KERNEL_A), server_hostname="allowed.test")
    with sock:
        for path in ("/1", "/2", "/3"):
            status, body = exchange(
                sock,
                f"POST {path} HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 3\r\n\r\nabc",
            )
            assert status == 200 and json.loads(body)["body"] == 3
    assert [r["path"] for r in platform.origin.requests] == ["/1", "/2", "/3"]


def test_through_the_proxy_variables(platform: Platform) -> None:
    # HTTPS_PROXY: CONNECT, then TLS with the platform's CA, as pip and requests do.
    tunnel = http.client.HTTPSConnection(
        EGRESS, 3128, context=platform.kernel_tls(), source_address=(KERNEL_A, 0), timeout=10
    )
    tunnel.set_tunnel("allowed.test", 443)
    tunnel.request("GET", "/via-connect")
    response = tunnel.getresponse()
    assert response.status == 200 and json.loads(response.read())["sni"] == "allowed.test"
    tunnel.close()
    # HTTP_PROXY: an absolute URL, forwarded in origin form.
    with connect(3128, KERNEL_A) as sock:
        status, body = exchange(
            sock, "GET http://allowed.test/plain HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
        )
    assert status == 200 and json.loads(body)["path"] == "/plain"


# --- refused, and nothing leaves --------------------------------------------------------------


def test_a_name_not_on_the_list(platform: Platform) -> None:
    status, body = https(platform, "other.test")
    assert status == 403 and "other.test:443 is not on this session's egress list" in body
    nothing_left(platform)
    assert reasons(platform) == ["not_allowed"]


def test_a_kernel_without_a_grant(platform: Platform) -> None:
    status, body = https(platform, "allowed.test", source=STRANGER)
    assert status == 403 and "has no egress" in body
    nothing_left(platform)
    assert reasons(platform) == ["no_grant"]


def test_an_allowed_name_on_a_port_not_allowed(platform: Platform) -> None:
    status, _ = https(platform, "allowed.test", port=8443)
    assert status == 403
    nothing_left(platform)
    assert reasons(platform) == ["port_not_allowed"]


def test_no_server_name(platform: Platform) -> None:
    context = platform.kernel_tls()
    context.check_hostname = False  # a client that sends no SNI at all
    with pytest.raises((ssl.SSLError, ConnectionError)):
        context.wrap_socket(connect(443, KERNEL_A)).sendall(b"GET / HTTP/1.1\r\n\r\n")
    nothing_left(platform)


def test_domain_fronting_sni_is_not_host(platform: Platform) -> None:
    status, _ = https(platform, "allowed.test", host="other.test")
    assert status == 421
    nothing_left(platform)
    assert reasons(platform) == ["host_mismatch"]


def test_a_later_request_for_another_host_on_the_same_connection(platform: Platform) -> None:
    sock = platform.kernel_tls().wrap_socket(connect(443, KERNEL_A), server_hostname="allowed.test")
    with sock:
        assert exchange(sock, "GET /ok HTTP/1.1\r\nHost: allowed.test\r\n\r\n")[0] == 200
        sock.sendall(b"GET /fronted HTTP/1.1\r\nHost: other.test\r\n\r\n")
        assert sock.recv(1) == b""  # closed, unanswered: the first answer may still be in flight
    assert [r["path"] for r in platform.origin.requests] == ["/ok"]


def test_a_connect_to_another_host_through_an_allowed_one(platform: Platform) -> None:
    with connect(3128, KERNEL_A) as sock:
        sock.sendall(b"CONNECT allowed.test:443 HTTP/1.1\r\nHost: allowed.test:443\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        with pytest.raises(ssl.SSLError):
            platform.kernel_tls().wrap_socket(sock, server_hostname="other.test")
    with connect(3128, KERNEL_A) as sock:
        status, _ = exchange(sock, "CONNECT other.test:443 HTTP/1.1\r\nHost: other.test\r\n\r\n")
        assert status == 403
    with connect(3128, KERNEL_A) as sock:  # an absolute URL naming another host than Host
        status, _ = exchange(sock, "GET http://other.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
        assert status == 400
    nothing_left(platform)


@pytest.mark.parametrize("name", ["private.test", "metadata.test"])
def test_a_name_resolving_to_a_private_or_link_local_address(platform: Platform, name: str) -> None:
    platform.grant(KERNEL_A, "session-a", name)
    status, body = https(platform, name)
    assert status == 502 and "never dialled" in body
    assert set(platform.upstream.asked) == {name}  # resolved by the proxy, and refused
    assert reasons(platform) == ["private_address"]


@pytest.mark.parametrize(
    "head",
    [
        "POST / HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 3\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: allowed.test\r\nHost: other.test\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: allowed.test\r\nX: a\r\n b\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: allowed.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        "GET / HTTP/2.0\r\nHost: allowed.test\r\n\r\n",
    ],
    ids=["cl-and-te", "two-lengths", "two-hosts", "folded", "no-host", "upgrade", "http2"],
)
def test_requests_a_server_could_read_otherwise_are_refused(platform: Platform, head: str) -> None:
    sock = platform.kernel_tls().wrap_socket(connect(443, KERNEL_A), server_hostname="allowed.test")
    with sock:
        status, _ = exchange(sock, head)
    assert status in (400, 501)
    nothing_left(platform)


# --- per session ------------------------------------------------------------------------------


def test_each_kernel_has_its_own_list(platform: Platform) -> None:
    status, _ = https(platform, "allowed.test", source=KERNEL_B)
    assert status == 403
    status, seen = https(platform, "also.test", source=KERNEL_B, port=8443)
    assert status == 200 and seen["host"] == "also.test"
    status, _ = https(platform, "also.test", source=KERNEL_A, port=8443)
    assert status == 403


def test_a_new_grant_replaces_the_old_one_entirely(platform: Platform) -> None:
    # A kernel that reuses an address, or a pooled kernel claimed by another session.
    platform.grant(KERNEL_A, "session-c", "also.test:8443")
    assert https(platform, "allowed.test")[0] == 403
    assert https(platform, "also.test", port=8443)[0] == 200


def test_revoking_ends_open_connections_at_once(platform: Platform) -> None:
    sock = platform.kernel_tls().wrap_socket(connect(443, KERNEL_A), server_hostname="allowed.test")
    with sock:
        assert exchange(sock, "GET /1 HTTP/1.1\r\nHost: allowed.test\r\n\r\n")[0] == 200
        platform.revoke(KERNEL_A)
        sock.settimeout(5)
        try:
            sock.sendall(b"GET /2 HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
            assert sock.recv(1) == b""
        except (ConnectionError, ssl.SSLError):
            pass
    assert https(platform, "allowed.test")[0] == 403
    assert [r["path"] for r in platform.origin.requests] == ["/1"]


def test_bytes_are_counted_per_session(platform: Platform) -> None:
    before = platform.recorder.counts.get(("session-a", "in"), 0)
    sock = platform.kernel_tls().wrap_socket(connect(443, KERNEL_A), server_hostname="allowed.test")
    with sock:
        status, body = exchange(sock, "GET /bytes/100000 HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
    assert status == 200 and body == b"x" * 100000
    deadline = time.monotonic() + 5  # counted on the proxy's side, just after it wrote
    while platform.recorder.counts[("session-a", "in")] - before <= 100000:
        assert time.monotonic() < deadline, platform.recorder.counts
        time.sleep(0.01)
    assert platform.recorder.counts[("session-a", "out")] > 0


# --- DNS --------------------------------------------------------------------------------------


def ask(name: str, kind: str = "A", source: str = KERNEL_A) -> dns.message.Message:
    query = dns.message.make_query(name, kind)
    return dns.query.udp(query, EGRESS, port=53, timeout=5, source=source)


def test_dns_answers_only_names_on_the_list(platform: Platform) -> None:
    answer = ask("allowed.test")
    assert answer.rcode() == dns.rcode.NOERROR
    assert [str(r) for r in answer.answer[0]] == [EGRESS]  # the proxy, never the real address
    assert ask("allowed.test", "AAAA").answer == []
    assert ask("allowed.test", "HTTPS").answer == []
    for name in ("other.test", "exfil-c2VjcmV0.attacker.test", "private.test"):
        assert ask(name).rcode() == dns.rcode.NXDOMAIN
    assert ask("allowed.test", source=KERNEL_B).rcode() == dns.rcode.NXDOMAIN
    assert ask("allowed.test", source=STRANGER).rcode() == dns.rcode.NXDOMAIN
    assert platform.upstream.asked == []  # no kernel query reached the upstream resolver


def test_dns_over_tcp(platform: Platform) -> None:
    answer = dns.query.tcp(
        dns.message.make_query("allowed.test", "A"), EGRESS, port=53, timeout=5, source=KERNEL_A
    )
    assert [str(r) for r in answer.answer[0]] == [EGRESS]


@pytest.mark.parametrize(("port", "kind"), [(853, socket.SOCK_STREAM), (443, socket.SOCK_DGRAM)])
def test_dot_and_quic_have_nothing_to_talk_to(platform: Platform, port: int, kind: int) -> None:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((KERNEL_A, 0))
        sock.settimeout(2)
        if kind == socket.SOCK_STREAM:
            with pytest.raises(ConnectionRefusedError):
                sock.connect((EGRESS, port))
        else:
            sock.sendto(b"\xc0" + b"\x00" * 1199, (EGRESS, port))  # a QUIC Initial's first byte
            with pytest.raises((ConnectionRefusedError, TimeoutError)):
                sock.recv(1)
