"""The kernels' DNS: it answers a name on the asking kernel's list with the enforcement point's
own address, and every other name with NXDOMAIN.

Nothing is ever forwarded: a kernel's query cannot reach any resolver beyond this one, so DNS
carries nothing out (no exfiltration in query names).  An allowed name's real addresses are
resolved by the proxy when it dials, never handed to the kernel.  Only A is answered; AAAA,
HTTPS/SVCB (which would carry ECH keys) and every other type get an empty answer for an allowed
name, so that a kernel dials IPv4, to the proxy.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from typing import Any, Final

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from sandbox_gateway.egress.grants import Grants

log = logging.getLogger("sandbox.egress")
TTL: Final = 30
MAX_TCP_QUERY: Final = 4096

Refusal = Callable[[str, str, str, str], None]
"""``(session, name, reason, source)``: called for every refused name (log and metric)."""


def answer(query: bytes, source: str, grants: Grants, refused: Refusal) -> bytes | None:
    """The reply to one query from ``source`` (``None``: too malformed to answer)."""
    try:
        message = dns.message.from_wire(query)
    except dns.exception.DNSException:
        return None
    reply = dns.message.make_response(message)
    reply.flags &= ~dns.flags.RA
    if message.opcode() != dns.opcode.QUERY or len(message.question) != 1:
        reply.set_rcode(dns.rcode.REFUSED if message.question else dns.rcode.FORMERR)
        return reply.to_wire()
    question = message.question[0]
    name = question.name.to_text(omit_final_dot=True).lower()
    grant = grants.lookup(source)
    if grant is None or not grant.allow.names(name) or question.rdclass != dns.rdataclass.IN:
        reply.set_rcode(dns.rcode.NXDOMAIN)
        refused(grant.session if grant else "", name, "dns_not_allowed", source)
        return reply.to_wire()
    if question.rdtype == dns.rdatatype.A:
        reply.answer.append(
            dns.rrset.from_text(
                question.name, TTL, dns.rdataclass.IN, dns.rdatatype.A, grant.answer
            )
        )
    return reply.to_wire()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, grants: Grants, refused: Refusal) -> None:
        self.grants, self.refused = grants, refused
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A DatagramTransport in all but its class (asyncio's selector one is not one).
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        reply = answer(data, addr[0], self.grants, self.refused)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


async def _tcp(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, grants: Grants, refused: Refusal
) -> None:
    source = writer.get_extra_info("peername")[0]
    try:
        while True:
            (size,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 10))
            if size > MAX_TCP_QUERY:
                return
            reply = answer(await reader.readexactly(size), source, grants, refused)
            if reply is None:
                return
            writer.write(struct.pack("!H", len(reply)) + reply)
            await writer.drain()
    except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(
    host: str, port: int, grants: Grants, refused: Refusal
) -> tuple[asyncio.DatagramTransport, asyncio.Server]:
    """Answer on ``host:port``, UDP and TCP."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _Udp(grants, refused), local_addr=(host, port)
    )
    server = await asyncio.start_server(
        lambda r, w: _tcp(r, w, grants, refused), host, port, limit=MAX_TCP_QUERY + 2
    )
    return transport, server
