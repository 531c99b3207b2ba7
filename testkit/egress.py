"""The egress tests' and bench's own test hosts: an HTTPS and HTTP origin with a test CA, which
records every request that reaches it, and an upstream resolver that records every name it is
asked.  They serve on loopback addresses only."""

from __future__ import annotations

import asyncio
import datetime
import json
import ssl
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NAMES = ("allowed.test", "other.test", "also.test")
# What the logging upstream answers: a private address and a link-local one, never dialled.
UPSTREAM_ANSWERS = {"private.test": "10.1.2.3", "metadata.test": "169.254.169.254"}


def origin_certificates(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """An origin CA and a server context presenting a certificate for every test name."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "egress test origin CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAMES[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in NAMES]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "origin-ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain = directory / "origin.pem"
    chain.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain)
    context.sni_callback = _remember_sni
    return ca_file, context


SNI: dict[int, str | None] = {}
"""The SNI each origin connection asked for, by its SSL object."""


def _remember_sni(obj: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
    SNI[id(obj)] = name


class Origin:
    """The test host: answers every request with what it saw, and records it."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tls = writer.get_extra_info("ssl_object")
        sni = SNI.pop(id(tls), None) if tls is not None else None
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                method, path, _ = lines[0].split(" ", 2)
                seen = {
                    "method": method,
                    "path": path,
                    "host": headers.get("host"),
                    "tls": tls is not None,
                    "sni": sni,
                    "body": len(body),
                }
                self.requests.append(seen)
                if path.startswith("/bytes/"):
                    payload = b"x" * int(path.rsplit("/", 1)[1])
                else:
                    payload = json.dumps(seen).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()


class Upstream(asyncio.DatagramProtocol):
    """A resolver that records every name it is asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A DatagramTransport in all but its class (asyncio's selector one is not one).
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True)
        self.asked.append(name)
        reply = dns.message.make_response(query)
        address = UPSTREAM_ANSWERS.get(name)
        if address is None:
            reply.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.A:
            reply.answer.append(
                dns.rrset.from_text(question.name, 60, dns.rdataclass.IN, dns.rdatatype.A, address)
            )
        assert self.transport is not None
        self.transport.sendto(reply.to_wire(), addr)


class _Recorded(list[Any]):
    """A record list that also appends each item to a JSON-lines file (read by the tests from
    outside the test host's container)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        path.write_text("")

    def append(self, item: Any) -> None:
        super().append(item)
        with self.path.open("a") as handle:
            handle.write(json.dumps(item) + "\n")


async def serve(directory: Path, host: str, extra_answers: dict[str, str]) -> None:
    """The test hosts in a container of their own (Docker e2e): the origin on 443, 8443, 9443
    and 80, the logging resolver on 53; the origin CA, then ``ready``, written to ``directory``,
    and every request and name asked appended to ``requests.jsonl`` and ``dns.jsonl`` there."""
    ca_file, context = origin_certificates(directory)
    origin, upstream = Origin(), Upstream()
    origin.requests = _Recorded(directory / "requests.jsonl")
    upstream.asked = _Recorded(directory / "dns.jsonl")
    UPSTREAM_ANSWERS.update(extra_answers)
    for port in (443, 8443, 9443):
        await asyncio.start_server(origin.handle, host, port, ssl=context)
    await asyncio.start_server(origin.handle, host, 80)
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: upstream, local_addr=(host, 53))
    (directory / "ready").write_text(str(ca_file))
    await asyncio.Event().wait()


class Records:
    """What reached the test hosts, read from the directory ``serve`` writes to (by the tests,
    from outside the test hosts' container or process)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def requests(self) -> list[dict[str, Any]]:
        """Every request that reached the origin, oldest first."""
        return _lines(self.directory / "requests.jsonl")

    def asked(self) -> list[str]:
        """Every name the logging resolver was asked."""
        return _lines(self.directory / "dns.jsonl")

    def reached(self, path: str) -> list[dict[str, Any]]:
        """The requests for ``path`` (a :func:`marker`) that reached the origin."""
        return [seen for seen in self.requests() if seen["path"] == path]


def marker() -> str:
    """A request path no other probe uses, to tell whether this probe's request got out."""
    return f"/probe-{uuid.uuid4().hex}"


def check_refusals_and_bytes_are_seen(
    kernel: Any,
    metrics: Callable[[], list[tuple[str, dict[str, str], float]]],
    logs: Callable[[], str],
) -> None:
    """A refusal for ``kernel`` (a session allowed allowed.test alone) is counted in the egress
    process's ``metrics`` and logged with its session and reason; the bytes of an allowed
    download are counted for the session."""

    def refused(reason: str) -> float:
        return sum(
            value
            for name, labels, value in metrics()
            if name == "sandbox_egress_connections_total"
            and labels == {"decision": "refused", "reason": reason}
        )

    before = refused("not_allowed")
    assert probe(kernel, "via_proxy('http://other.test/counted')")[0] == 403
    assert refused("not_allowed") == before + 1
    line = next(line for line in reversed(logs().splitlines()) if "other.test" in line)
    assert kernel.kernel_id in line and "not_allowed" in line, line
    assert probe(kernel, "via_proxy('https://allowed.test/bytes/100000')")[0] == 200
    moved = {
        labels["direction"]: value
        for name, labels, value in metrics()
        if name == "sandbox_egress_bytes_total" and labels.get("session") == kernel.kernel_id
    }
    assert moved.get("in", 0) >= 100000 and moved.get("out", 0) > 0, moved


def probe(kernel: Any, expression: str) -> Any:
    """``expression``'s value in a kernel (a client session) where :data:`PROBES` ran."""
    result = kernel.execute(f"print(_json.dumps({expression}))", timeout=60)
    result.raise_for_error()
    return json.loads(result.stdout)


def _lines(path: Path) -> list[Any]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


# Defined in a kernel by the egress e2e tests (Docker and Kubernetes): what hostile code tries.
PROBES = r'''
import json as _json, os as _os, socket as _socket, ssl as _ssl, urllib.error as _ue
import urllib.request as _ur

def via_proxy(url, timeout=10, data=None):
    """What code using the proxy variables (pip, requests, urllib) gets."""
    try:
        with _ur.urlopen(url, timeout=timeout, data=data) as answer:
            return [answer.status, answer.read().decode()]
    except _ue.HTTPError as exc:
        return [exc.code, exc.read().decode(errors="replace")]
    except Exception as exc:
        return [type(exc).__name__, str(exc)]

def direct(host, port, tls=True, sni=None, host_header=None, path="/", timeout=10):
    """What code that ignores the proxy variables gets: it resolves and connects itself."""
    try:
        sock = _socket.create_connection((host, port), timeout=timeout)
        if tls:
            sock = _ssl.create_default_context().wrap_socket(sock, server_hostname=sni or host)
        request = f"GET {path} HTTP/1.1\r\nHost: {host_header or host}\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode())
        data = b""
        while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n")
             if line.lower().startswith(b"content-length:")),
            0,
        )
        while len(body) < length and (chunk := sock.recv(65536)):
            body += chunk
        return (head + b"\r\n\r\n" + body).decode(errors="replace") if head else ""
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"

def resolve(name):
    try:
        return _socket.gethostbyname(name)
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"

def udp(host, port):
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    sock.settimeout(3)
    try:
        sock.sendto(b"\x00" * 1200, (host, port))
        return sock.recv(2048).hex()
    except Exception as exc:
        return type(exc).__name__

def transports(origin):
    """QUIC, DNS over TLS and DNS over HTTPS, at the egress process and at the origin."""
    return {
        "quic_egress": udp(EGRESS, 443),
        "quic_origin": udp(origin, 443),
        "dot": direct(EGRESS, 853, timeout=3),
        "dot_origin": direct(origin, 853, timeout=3),
        "doh": via_proxy(
            "https://other.test/dns-query?dns=AAABAAABAAAAAAAAA3d3dwdleGFtcGxlA2NvbQAAAQAB"
        ),
    }

EGRESS = _os.environ["HTTPS_PROXY"].removeprefix("http://").rsplit(":", 1)[0]
'''


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="serve the egress test hosts")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--answer", action="append", default=[], help="name=address")
    args = parser.parse_args()
    answers = dict(item.split("=", 1) for item in args.answer)
    asyncio.run(serve(args.directory, args.host, answers))
