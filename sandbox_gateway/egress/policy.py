"""Egress allow-lists: the operator's ceiling, a session's list, and what may be dialled.

One syntax for the operator's ceiling and for a session's list, both set as variables (named
where they are read): comma-separated domain patterns, each optionally with ``:port``.

* ``pypi.org`` is that name only; ``*.pythonhosted.org`` is any name below it, at any depth, and
  not ``pythonhosted.org`` itself (as a TLS wildcard would not be).
* Without a port an entry allows 443 and 80.
* Names are compared in lower case, without a trailing dot.  IP addresses, bare ``*`` and
  wildcards anywhere but the leftmost label are refused: a list names hosts, never networks,
  so that an address shared on a CDN never opens its co-tenants.

A session gets exactly the entries it asked for, each of which must lie within the ceiling; one
that does not refuses the start (:class:`EgressRefused`), never dropped in silence.  A session
that asks for nothing gets nothing.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

DEFAULT_PORTS: Final = (443, 80)
MAX_ENTRIES: Final = 64
HOST_LABEL: Final = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
"""One label of a host name, in lower case."""


class EgressRefused(ValueError):
    """A list that cannot be granted; the message says which entry and why."""


@dataclass(frozen=True, order=True)
class Entry:
    """One pattern: ``suffix`` is the whole name, or for a wildcard the part after ``*.``."""

    suffix: str
    wildcard: bool
    ports: tuple[int, ...]

    def __str__(self) -> str:
        name = f"*.{self.suffix}" if self.wildcard else self.suffix
        if self.ports == DEFAULT_PORTS:
            return name
        return ",".join(f"{name}:{port}" for port in self.ports)

    def names(self, name: str) -> bool:
        """Whether this pattern names ``name`` (already normalised)."""
        if self.wildcard:
            return name.endswith("." + self.suffix)
        return name == self.suffix

    def covers(self, other: Entry, port: int) -> bool:
        """Whether every name ``other`` allows on ``port`` is allowed here on ``port``."""
        if port not in self.ports:
            return False
        if not other.wildcard:
            return self.names(other.suffix)
        return self.wildcard and (
            other.suffix == self.suffix or other.suffix.endswith("." + self.suffix)
        )


@dataclass(frozen=True)
class AllowList:
    entries: tuple[Entry, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __str__(self) -> str:
        return ",".join(str(entry) for entry in self.entries)

    def allows(self, name: str, port: int) -> bool:
        normal = normalise_name(name)
        return normal is not None and any(
            port in entry.ports and entry.names(normal) for entry in self.entries
        )

    def names(self, name: str) -> bool:
        """Whether any entry names ``name``, on any port (what the DNS answers)."""
        normal = normalise_name(name)
        return normal is not None and any(entry.names(normal) for entry in self.entries)

    def within(self, ceiling: AllowList) -> None:
        """Raise :class:`EgressRefused` naming the first entry the ceiling does not cover."""
        for entry in self.entries:
            for port in entry.ports:
                if not any(allowed.covers(entry, port) for allowed in ceiling.entries):
                    shown = f"*.{entry.suffix}" if entry.wildcard else entry.suffix
                    if not ceiling:
                        raise EgressRefused(
                            f"egress to {shown}:{port} is not allowed: this gateway allows no "
                            "egress (its egress ceiling is empty)"
                        )
                    raise EgressRefused(
                        f"egress to {shown}:{port} is not within this gateway's "
                        f"egress ceiling ({ceiling})"
                    )


def normalise_name(name: str) -> str | None:
    """``name`` in lower case without a trailing dot, or ``None`` if it is not a host name."""
    text = name.strip().lower().removesuffix(".")
    if not text or len(text) > 253:
        return None
    labels = text.split(".")
    if len(labels) < 2 or not all(HOST_LABEL.fullmatch(label) for label in labels):
        return None
    if labels[-1].isdigit():
        return None  # an address, or what some resolvers would read as one
    return text


def parse(text: str, *, setting: str) -> AllowList:
    """Parse a comma-separated list; ``setting`` names it in errors."""
    merged: dict[tuple[str, bool], set[int]] = {}
    items = [item.strip() for item in text.split(",") if item.strip()]
    if len(items) > MAX_ENTRIES:
        raise EgressRefused(f"{setting}: at most {MAX_ENTRIES} entries, got {len(items)}")
    for item in items:
        name, port = _split_port(item, setting)
        wildcard = name.startswith("*.")
        bare = name[2:] if wildcard else name
        if _is_address(bare):
            raise EgressRefused(
                f"{setting}: {item!r} is an address; an allow-list names hosts (a name's "
                "addresses are resolved at connection time)"
            )
        suffix = normalise_name(bare)
        if suffix is None or "*" in bare:
            raise EgressRefused(
                f"{setting}: {item!r} is not a host name or '*.' followed by one "
                "(like pypi.org or *.pythonhosted.org)"
            )
        ports = merged.setdefault((suffix, wildcard), set())
        ports.update(DEFAULT_PORTS if port is None else (port,))
    entries = (
        Entry(suffix, wildcard, tuple(sorted(ports, key=_port_order)))
        for (suffix, wildcard), ports in merged.items()
    )
    return AllowList(tuple(sorted(entries)))


def _port_order(port: int) -> tuple[int, int]:
    return (0 if port == 443 else 1 if port == 80 else 2, port)


def _split_port(item: str, setting: str) -> tuple[str, int | None]:
    if item.count(":") != 1:
        if ":" in item:
            raise EgressRefused(f"{setting}: {item!r}: one name and at most one :port")
        return item, None
    name, _, port_text = item.partition(":")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise EgressRefused(f"{setting}: {item!r}: the port must be a number from 1 to 65535")
    return name, int(port_text)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def session_list(text: str, ceiling: AllowList, *, setting: str) -> AllowList:
    """The list a start request asks for (``text``, its ``setting``'s value), checked against
    the ceiling (empty: no egress)."""
    wanted = parse(text, setting=setting)
    wanted.within(ceiling)
    return wanted


def resolve_overrides(text: str, *, setting: str) -> dict[str, tuple[str, ...]]:
    """The operator's static mappings (``setting``): ``name=address`` pairs, commas between them,
    trusted as they are (private addresses included), for internal mirrors and test hosts."""
    table: dict[str, list[str]] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, address = item.partition("=")
        normal = normalise_name(name)
        if not sep or normal is None or not _is_address(address.strip()):
            raise EgressRefused(
                f"{setting}: {item!r} is not name=address (like mirror.internal=10.0.0.5)"
            )
        table.setdefault(normal, []).append(str(ipaddress.ip_address(address.strip())))
    return {name: tuple(addresses) for name, addresses in table.items()}


def dialable(address: str, denied: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """Whether a resolved address may be dialled: a global unicast address outside the
    platform's own ranges (``denied``: the kernels', the pods', the services').  Private,
    loopback, link-local (169.254.169.254), CGNAT, multicast, reserved and documentation
    ranges are never dialled for a name the upstream resolver answered."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if not ip.is_global or ip.is_multicast:
        return False
    return not any(ip in network for network in denied if network.version == ip.version)
