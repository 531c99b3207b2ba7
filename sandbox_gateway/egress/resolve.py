"""How the enforcement point finds an allowed name's addresses: it resolves the name itself and
dials what it resolved, never an address a kernel chose.

The operator's static ``name=address`` mappings are trusted as they are; every other name goes
to the upstream resolver (the operator's, else the host's), and an answer is
kept only where :func:`policy.dialable` allows it: a name that resolves to a private, loopback,
link-local or platform address is refused, whoever's DNS said so.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

from sandbox_gateway.egress.policy import dialable

MAX_TTL: Final = 300.0

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ResolveRefused(Exception):
    """No address may be dialled for the name; ``reason`` is a metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class _Cached:
    addresses: tuple[str, ...]
    expires: float


class Resolver:
    def __init__(
        self,
        *,
        upstream: tuple[str, int] | None,
        static: dict[str, tuple[str, ...]],
        denied: Sequence[Network],
        timeout: float = 3.0,
    ) -> None:
        self.static = static
        self.denied = list(denied)
        self._resolver = dns.asyncresolver.Resolver(configure=upstream is None)
        if upstream is not None:
            self._resolver.nameservers = [upstream[0]]
            self._resolver.port = upstream[1]
        self._resolver.lifetime = timeout
        self._cache: dict[str, _Cached] = {}

    async def addresses(self, name: str) -> tuple[str, ...]:
        """Addresses to dial for ``name``, IPv4 first; :class:`ResolveRefused` if none may be."""
        if name in self.static:
            return self.static[name]
        cached = self._cache.get(name)
        if cached is not None and cached.expires > time.monotonic():
            return cached.addresses
        found: list[str] = []
        ttl = MAX_TTL
        for kind in (dns.rdatatype.A, dns.rdatatype.AAAA):
            try:
                answer = await self._resolver.resolve(name, kind, search=False)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
                raise ResolveRefused("dns_failed", f"cannot resolve {name}: {exc}") from None
            ttl = min(ttl, float(answer.rrset.ttl if answer.rrset is not None else 0))
            found.extend(str(record) for record in answer)
        if not found:
            raise ResolveRefused("dns_failed", f"{name} has no address")
        allowed = tuple(address for address in found if dialable(address, self.denied))
        if not allowed:
            raise ResolveRefused(
                "private_address",
                f"{name} resolves only to addresses that are never dialled ({', '.join(found)})",
            )
        self._cache[name] = _Cached(allowed, time.monotonic() + ttl)
        return allowed
