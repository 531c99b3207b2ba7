"""Who may go where: each granted kernel by its source address.

A grant names the session (the kernel id), its list and the address at which the kernel sees the
enforcement point (what the DNS answers for an allowed name).  A source address with no grant
gets nothing: no name resolves, no connection is relayed.  Revoking a grant takes effect on the
next packet, and ends the connections it allowed.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass, field

from sandbox_gateway.egress.policy import AllowList


@dataclass(eq=False)
class Grant:
    session: str
    allow: AllowList
    answer: str
    """The enforcement point's address as the kernel reaches it."""
    connections: set[asyncio.Task[None]] = field(default_factory=set)


class Grants:
    def __init__(self) -> None:
        self._by_source: dict[str, Grant] = {}

    def grant(self, source: str, grant: Grant) -> None:
        """Give ``source`` its list; whatever it held before (another session's) ends first."""
        key = _key(source)
        self.revoke(key)
        self._by_source[key] = grant

    def revoke(self, source: str) -> Grant | None:
        grant = self._by_source.pop(_key(source), None)
        if grant is not None:
            for task in list(grant.connections):
                task.cancel()
        return grant

    def revoke_session(self, session: str) -> None:
        for source, grant in list(self._by_source.items()):
            if grant.session == session:
                self.revoke(source)

    def lookup(self, source: str) -> Grant | None:
        return self._by_source.get(_key(source))

    def __len__(self) -> int:
        return len(self._by_source)


def _key(source: str) -> str:
    ip = ipaddress.ip_address(source.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)
