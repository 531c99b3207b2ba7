"""The enforcement point on loopback, with the project's own test hosts beside it.

Everything listens on addresses of 127.0.0.0/8, on the real ports (443, 80, 53), so these tests
need root (CI is root):

* the proxy and the kernels' DNS on ``EGRESS`` (443, 80, 8443, 3128, 53);
* an HTTPS and HTTP origin on ``ORIGIN`` with a test CA, for ``allowed.test``, ``other.test``
  and ``also.test`` alike (co-tenants of one address, as on a CDN); it records every request
  that reaches it, so a test can tell that a refused request never left;
* a logging upstream resolver on ``UPSTREAM``: what the proxy asks it, it records.

"Kernels" are sockets bound to ``KERNEL_A``/``KERNEL_B``/``STRANGER`` as their source.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sandbox_gateway.egress import dns as egress_dns
from sandbox_gateway.egress.certs import EgressCA, origin_context
from sandbox_gateway.egress.grants import Grant, Grants
from sandbox_gateway.egress.policy import parse
from sandbox_gateway.egress.proxy import EgressProxy
from sandbox_gateway.egress.resolve import Resolver

EGRESS = "127.0.0.20"
ORIGIN = "127.0.0.30"
UPSTREAM = ("127.0.0.40", 53)
KERNEL_A, KERNEL_B, STRANGER = "127.0.0.2", "127.0.0.3", "127.0.0.4"
NAMES = ("allowed.test", "other.test", "also.test")
# What the logging upstream answers: a private address and a link-local one, never dialled.
UPSTREAM_ANSWERS = {"private.test": "10.1.2.3", "metadata.test": "169.254.169.254"}


@dataclass
class Recorder:
    """The proxy's observer: its decisions and the bytes it moved per session."""

    decisions: list[tuple[str, str]] = field(default_factory=list)
    counts: dict[tuple[str, str], int] = field(default_factory=dict)

    def decided(self, decision: str, reason: str) -> None:
        self.decisions.append((decision, reason))

    def moved(self, session: str, direction: str, count: int) -> None:
        key = (session, direction)
        self.counts[key] = self.counts.get(key, 0) + count


def _test_ca(directory: Path) -> tuple[Path, ssl.SSLContext]:
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


@dataclass
class Platform:
    loop: asyncio.AbstractEventLoop
    grants: Grants
    origin: Origin
    upstream: Upstream
    recorder: Recorder
    ca_file: Path
    """The platform CA's certificate: what a kernel trusts."""

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def grant(self, source: str, session: str, allow: str) -> None:
        async def give() -> None:
            self.grants.grant(source, Grant(session, parse(allow, setting="test"), EGRESS))

        self.run(give())

    def revoke(self, source: str) -> None:
        async def take() -> None:
            self.grants.revoke(source)

        self.run(take())

    def kernel_tls(self) -> ssl.SSLContext:
        """What a kernel's HTTPS client trusts: the platform's CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    if os.geteuid() != 0:
        pytest.skip("the egress tests bind ports 53, 80 and 443 on loopback addresses: run as root")
    directory = tmp_path_factory.mktemp("egress")
    origin_ca, origin_tls = _test_ca(directory)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="egress-test-loop", daemon=True)
    thread.start()
    closing: list[Any] = []

    async def up() -> Platform:
        grants, origin, recorder = Grants(), Origin(), Recorder()
        upstream_transport, upstream = await asyncio.get_running_loop().create_datagram_endpoint(
            Upstream, local_addr=UPSTREAM
        )
        closing.append(upstream_transport)
        for port, tls in ((443, origin_tls), (80, None), (8443, origin_tls)):
            closing.append(await asyncio.start_server(origin.handle, ORIGIN, port, ssl=tls))
        resolver = Resolver(
            upstream=UPSTREAM, static={name: (ORIGIN,) for name in NAMES}, denied=[]
        )
        ca = EgressCA(directory / "ca")
        proxy = EgressProxy(grants, resolver, ca, origin_context(str(origin_ca)), recorder)
        closing.append(await proxy.serve_tls(EGRESS, 443))
        closing.append(await proxy.serve_tls(EGRESS, 8443))
        closing.append(await proxy.serve_http(EGRESS, 80))
        closing.append(await proxy.serve_proxy(EGRESS, 3128))
        closing.extend(await egress_dns.serve(EGRESS, 53, grants, lambda *refusal: None))
        return Platform(loop, grants, origin, upstream, recorder, ca.cert_path)

    async def down() -> None:
        for thing in closing:
            thing.close()
        for thing in closing:
            if isinstance(thing, asyncio.Server):
                await thing.wait_closed()

    yield asyncio.run_coroutine_threadsafe(up(), loop).result(30)
    asyncio.run_coroutine_threadsafe(down(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()
