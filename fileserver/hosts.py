"""``Host`` allow-list, a pure ASGI middleware: the defence against DNS rebinding (SPEC §5a).

A web page in the user's browser can make a name of its own resolve to 127.0.0.1 and then talk to
this server under that name; binding to loopback does not stop it, but the browser always sends
that name in ``Host``. Only names this server is known by are answered: ``localhost``, the
loopback addresses, the compose service name and the names configured for the deployment
(``Settings.host_allow_list``), plus the IP address the request arrived on, which is what a
Kubernetes probe or a peer addressing the pod by IP sends; a page cannot rebind a name to that.
The check reads the header, never the peer address, so Docker's port forwarding (which rewrites
the peer) neither defeats nor trips it.

It runs before routing, so it covers every route, ``/health``, ``/openapi.json`` and unknown
paths included, and before authentication, so a valid token does not get a foreign name in.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Collection, Sequence

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

# Loopback under every spelling a local client uses, and the compose service name (the
# Dockerfile's healthcheck calls 127.0.0.1:8080 from inside the container).
DEFAULT_ALLOWED_HOSTS = ("localhost", "127.0.0.1", "[::1]", "fileserver")

_NAME = re.compile(r"(?:[a-z0-9_-]+\.)*[a-z0-9_-]+\.?")
_BRACKETED = re.compile(r"\[([0-9a-f:.]+)\]")
_PORT = re.compile(r"[0-9]{0,5}")
# Bounds what a refusal echoes back of an attacker-chosen header.
_MAX_SHOWN = 100


def split_host(value: str) -> tuple[str, str | None] | None:
    """Split a ``Host`` value into a normalised host and its port (``None`` when absent).

    The host is lower-cased, a trailing dot removed, IPv6 literals compressed (``[::1]``).
    Returns ``None`` when ``value`` is not a valid ``host[:port]`` (RFC 9110 §7.2).
    """
    text = value.strip().lower()
    port: str | None = None
    if text.startswith("["):
        host, bracket, rest = text.partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        if rest:
            port = rest[1:]
        inner = _BRACKETED.fullmatch(host + "]")
        if inner is None:
            return None
        try:
            name = f"[{ipaddress.IPv6Address(inner.group(1)).compressed}]"
        except ValueError:
            return None
    else:
        host, colon, rest = text.partition(":")
        if colon:
            port = rest
        if not _NAME.fullmatch(host):
            return None
        name = host.removesuffix(".")
    if port is not None and not _PORT.fullmatch(port):
        return None
    return name, port


def normalise_allowed_host(entry: str) -> str:
    """The allow-list form of a configured name; ``ValueError`` unless it is a bare host."""
    parsed = split_host(entry)
    if parsed is None or parsed[1] is not None:
        raise ValueError(
            f"{entry!r} is not a host name or IP literal (give names without scheme, port, "
            "path or wildcard, e.g. files.example.org or [2001:db8::1])"
        )
    return parsed[0]


def local_address_name(server: Sequence[object] | None) -> str | None:
    """The ``Host`` form of the address a connection arrived on (ASGI ``scope["server"]``)."""
    if not server or not isinstance(server[0], str):
        return None
    try:
        address = ipaddress.ip_address(server[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return f"[{address.compressed}]"
    return str(address)


def refusal(
    headers: list[tuple[bytes, bytes]], allowed: Collection[str], local: str | None = None
) -> tuple[int, str] | None:
    """``(status, detail)`` when the request's ``Host`` must be refused, else ``None``.

    ``local`` is the address the request arrived on (``local_address_name``), also allowed.
    400 for a missing, repeated or malformed header (RFC 9112 §3.2), 421 Misdirected Request
    for a well-formed name this server does not answer to.
    """
    values = [value for key, value in headers if key == b"host"]
    if not values:
        return 400, "the request has no Host header"
    if len(values) > 1:
        return 400, "the request has more than one Host header"
    raw = values[0].decode("latin-1")
    shown = raw[:_MAX_SHOWN]
    parsed = split_host(raw)
    if parsed is None:
        return 400, f"malformed Host header {shown!r}"
    if parsed[0] not in allowed and parsed[0] != local:
        return 421, (
            f"this server does not answer to the name {shown!r}; add it to "
            "FILE_SERVER_ALLOWED_HOSTS (or SANDBOX_ALLOWED_HOSTS) if it is this server's"
        )
    return None


class HostAllowListMiddleware:
    """Answers 400/421 with a JSON ``detail`` (HTTP), or closes (websocket), on a foreign Host."""

    def __init__(self, app: ASGIApp, allowed_hosts: Callable[[], Collection[str]]) -> None:
        self.app = app
        # Called per request so that settings overridden in tests apply here as in the routes.
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        local = local_address_name(scope.get("server"))
        refused = refusal(scope["headers"], self.allowed_hosts(), local)
        if refused is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            # Closing before accepting makes the server answer the upgrade with 403.
            await receive()
            await send({"type": "websocket.close", "code": 1008, "reason": "Host not allowed"})
        else:
            status, detail = refused
            await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)
