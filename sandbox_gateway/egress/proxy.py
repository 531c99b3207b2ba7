"""The enforcement point: it relays a granted kernel's HTTP and HTTPS to the names on its list,
and nothing else.

Three kinds of listener, all on the address the kernels' DNS hands out for allowed names:

* **TLS** (443, and any other port of the ceiling): the handshake is ended here with a
  certificate of the platform's CA for the SNI's name (no SNI: refused); the name and the
  listener's port must be on the kernel's list.
* **HTTP** (80): the first request's Host names the connection's host.
* **Proxy** (3128, ``HTTP(S)_PROXY``): ``CONNECT host:port`` (then TLS as above, where the SNI
  must be the CONNECT's host), or absolute-form ``GET http://host/...``.

On every connection each request is read before it is forwarded (``http1``): a Host that is not
the connection's name (domain fronting, a tunnel to another host) is answered here, 421, and
never sent.  The name is resolved here (``resolve``) and the proxy dials what it resolved, over
TLS verified against the system's CAs when the kernel spoke TLS.  Nothing but TCP is relayed:
UDP (QUIC, DNS) has no listener, and a kernel's network has no route past this point.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Final

from sandbox_gateway.egress import http1
from sandbox_gateway.egress.certs import EgressCA
from sandbox_gateway.egress.grants import Grant, Grants
from sandbox_gateway.egress.resolve import Resolver, ResolveRefused

log = logging.getLogger("sandbox.egress")
CONNECT_TIMEOUT: Final = 10.0
HANDSHAKE_TIMEOUT: Final = 10.0
HEAD_TIMEOUT: Final = 60.0
CHUNK: Final = 1 << 18
PLAIN_PORTS: Final = frozenset({80})
"""Ports whose connections are plain HTTP; every other allowed port speaks TLS."""


class Refused(Exception):
    """A connection or request refused here; ``reason`` is its metric label.  ``status``: the
    HTTP answer sent in its place (``None``: none, the connection is closed)."""

    def __init__(self, reason: str, detail: str, status: int | None = 403) -> None:
        super().__init__(detail)
        self.reason, self.status = reason, status


_REASONS: Final = {
    400: "Bad Request",
    403: "Forbidden",
    421: "Misdirected Request",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
}


def refusal_of(bad: http1.BadRequest, *, answer: bool = True) -> Refused:
    reason = "host_mismatch" if bad.status == 421 else "bad_request"
    return Refused(reason, bad.detail, bad.status if answer else None)


class Observer:
    """Where decisions and bytes go: ``service.EgressMetrics``, a test's recorder; this base
    class forgets them."""

    def decided(self, decision: str, reason: str) -> None:
        pass

    def moved(self, session: str, direction: str, count: int) -> None:
        pass


@dataclass
class Origin:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


class EgressProxy:
    def __init__(
        self,
        grants: Grants,
        resolver: Resolver,
        ca: EgressCA,
        origin_tls: ssl.SSLContext,
        observer: Observer,
    ) -> None:
        self.grants, self.resolver, self.ca = grants, resolver, ca
        self.origin_tls, self.observer = origin_tls, observer
        self._dispatch = ca.dispatch_context()

    # --- listeners ------------------------------------------------------------------------

    async def serve_tls(self, host: str, listen: int, port: int | None = None) -> asyncio.Server:
        """Transparent HTTPS on ``host:listen``, judged as port ``port`` (default: ``listen``)."""
        judged = listen if port is None else port
        return await asyncio.start_server(
            lambda r, w: self._guarded(w, self._tls(r, w, judged)),
            host,
            listen,
            ssl=self._dispatch,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
        )

    async def serve_http(self, host: str, listen: int, port: int = 80) -> asyncio.Server:
        return await asyncio.start_server(
            lambda r, w: self._guarded(w, self._http(r, w, port)), host, listen
        )

    async def serve_proxy(self, host: str, listen: int) -> asyncio.Server:
        return await asyncio.start_server(
            lambda r, w: self._guarded(w, self._proxy(r, w)), host, listen
        )

    # --- connections --------------------------------------------------------------------------

    async def _guarded(self, writer: asyncio.StreamWriter, work: Awaitable[None]) -> None:
        """Run one connection; a refusal is logged, counted and answered where it can be."""
        source = str(writer.get_extra_info("peername")[0])
        grant = self.grants.lookup(source)
        task = asyncio.current_task()
        if grant is not None and task is not None:
            grant.connections.add(task)
        try:
            await work
        except Refused as refusal:
            self._refused(grant, source, refusal, writer)
        except http1.BadRequest as bad:
            self._refused(grant, source, refusal_of(bad), writer)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError) as exc:
            log.debug("egress connection from %s ended: %s", source, exc)
        finally:
            if grant is not None and task is not None:
                grant.connections.discard(task)
            writer.close()

    def _granted(self, writer: asyncio.StreamWriter) -> Grant:
        source = str(writer.get_extra_info("peername")[0])
        grant = self.grants.lookup(source)
        if grant is None:
            raise Refused("no_grant", f"{source} has no egress")
        return grant

    async def _tls(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int
    ) -> None:
        grant = self._granted(writer)
        tls = writer.get_extra_info("ssl_object")
        name = self.ca.name_of(tls.context) if tls is not None else None
        if name is None:
            raise Refused("no_sni", "a TLS connection without a server name")
        self._check(grant, name, port)
        await self._relay(grant, name, port, reader, writer, tls=True)

    async def _http(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int
    ) -> None:
        grant = self._granted(writer)
        first = await self._head(reader)
        if first is None:
            return
        if first.port not in (None, port):
            raise Refused("port_not_allowed", f"Host {first.host}:{first.port} on port {port}")
        self._check(grant, first.host, port)
        await self._relay(grant, first.host, port, reader, writer, tls=False, first=first)

    async def _proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        grant = self._granted(writer)
        first = await self._head(reader)
        if first is None:
            return
        if first.method != "CONNECT":
            name, port = http1.origin_form(first)
            port = port or 80
            self._check(grant, name, port)
            await self._relay(grant, name, port, reader, writer, tls=False, first=first, proxy=True)
            return
        name, port = first.host, first.port or 443
        self._check(grant, name, port)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        if port not in PLAIN_PORTS:
            try:
                await writer.start_tls(
                    self.ca.server_context(name), ssl_handshake_timeout=HANDSHAKE_TIMEOUT
                )
            except ssl.SSLError as exc:
                raise Refused("sni_mismatch", f"TLS in a CONNECT to {name}: {exc}") from None
        await self._relay(grant, name, port, reader, writer, tls=port not in PLAIN_PORTS)

    async def _head(self, reader: asyncio.StreamReader) -> http1.Request | None:
        return await asyncio.wait_for(http1.read_request(reader), HEAD_TIMEOUT)

    def _check(self, grant: Grant, name: str, port: int) -> None:
        if grant.allow.allows(name, port):
            return
        reason = "port_not_allowed" if grant.allow.names(name) else "not_allowed"
        raise Refused(reason, f"{name}:{port} is not on this session's egress list")

    # --- relaying ---------------------------------------------------------------------------

    async def _relay(
        self,
        grant: Grant,
        name: str,
        port: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        tls: bool,
        first: http1.Request | None = None,
        proxy: bool = False,
    ) -> None:
        """Forward each request of the connection to ``name:port``, its responses back.

        The origin is dialled at once, while the first request is read: a new connection then
        costs the slower of the two, not their sum.  Nothing is sent on it before a request
        passed its check.
        """
        dialing = asyncio.ensure_future(self._dial(grant, name, port, tls))
        origin: Origin | None = None
        pump: asyncio.Task[None] | None = None
        forwarded = False
        try:
            while True:
                try:
                    request = first or await self._head(reader)
                    first = None
                    if request is None:
                        return
                    host, request_port = (
                        http1.origin_form(request) if proxy else (request.host, request.port)
                    )
                    if host != name or request_port not in (None, port):
                        raise http1.BadRequest(
                            421, "Misdirected Request", f"Host {host} on a connection to {name}"
                        )
                except http1.BadRequest as bad:
                    # Answered only while no earlier answer can be in flight from the origin.
                    raise refusal_of(bad, answer=not forwarded) from None
                if origin is None:
                    origin = await dialing
                    pump = asyncio.ensure_future(self._pump(grant, origin.reader, writer))
                    self.observer.decided("allowed", "")
                    log.info("egress: session=%s %s:%d allowed", grant.session, name, port)
                origin.writer.write(request.raw)
                forwarded = True
                sent = len(request.raw) + await http1.relay_body(request, reader, origin.writer)
                self.observer.moved(grant.session, "out", sent)
                if pump is not None and pump.done():
                    return
        finally:
            dialing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Refused):
                origin = origin or await dialing
            if pump is not None:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError, ssl.SSLError):
                    await pump
            if origin is not None:
                origin.writer.close()

    async def _dial(self, grant: Grant, name: str, port: int, tls: bool) -> Origin:
        try:
            addresses = await self.resolver.addresses(name)
        except ResolveRefused as exc:
            raise Refused(exc.reason, str(exc), status=502) from None
        failure: Exception | None = None
        for address in addresses:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        address,
                        port,
                        ssl=self.origin_tls if tls else None,
                        server_hostname=name if tls else None,
                        ssl_handshake_timeout=HANDSHAKE_TIMEOUT if tls else None,
                    ),
                    CONNECT_TIMEOUT,
                )
            except (OSError, ssl.SSLError, TimeoutError) as exc:
                failure = exc
                continue
            return Origin(reader, writer)
        raise Refused("origin_unreachable", f"{name}:{port}: {failure}", status=502)

    async def _pump(
        self, grant: Grant, origin: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        try:
            while data := await origin.read(CHUNK):
                client.write(data)
                self.observer.moved(grant.session, "in", len(data))
                await client.drain()
        except (OSError, ssl.SSLError):
            pass
        finally:
            client.close()

    def _refused(
        self, grant: Grant | None, source: str, refusal: Refused, writer: asyncio.StreamWriter
    ) -> None:
        self.observer.decided("refused", refusal.reason)
        if refusal.status is not None and not writer.is_closing():
            reason = _REASONS.get(refusal.status, "Refused")
            writer.write(http1.answer(refusal.status, reason, str(refusal)))
        log.warning(
            "egress refused: session=%s source=%s reason=%s: %s",
            grant.session if grant else "-",
            source,
            refusal.reason,
            refusal,
        )
