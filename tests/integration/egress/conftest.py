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
import os
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sandbox_gateway.egress import dns as egress_dns
from sandbox_gateway.egress.certs import EgressCA, origin_context
from sandbox_gateway.egress.grants import Grant, Grants
from sandbox_gateway.egress.policy import parse
from sandbox_gateway.egress.proxy import EgressProxy
from sandbox_gateway.egress.resolve import Resolver
from testkit.egress import NAMES, Origin, Upstream, origin_certificates

EGRESS = "127.0.0.20"
ORIGIN = "127.0.0.30"
UPSTREAM = ("127.0.0.40", 53)
KERNEL_A, KERNEL_B, STRANGER = "127.0.0.2", "127.0.0.3", "127.0.0.4"


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


@dataclass
class Platform:
    loop: asyncio.AbstractEventLoop
    grants: Grants
    origin: Origin
    upstream: Upstream
    recorder: Recorder
    ca_file: Path
    """The platform CA's certificate: what a kernel trusts."""
    origin_ca: Path
    """The test hosts' CA: what the proxy trusts besides the system's."""

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
    origin_ca, origin_tls = origin_certificates(directory)
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
        return Platform(loop, grants, origin, upstream, recorder, ca.cert_path, origin_ca)

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
