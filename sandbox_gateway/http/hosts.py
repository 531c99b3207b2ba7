"""One ``Host`` allow-list for the gateway, the notebook and the file server (DNS rebinding).

A web page the user visits can make a name of its own resolve to 127.0.0.1 (or to a pod's
address) and then talk to these servers under that name: binding to loopback does not keep it
out, and the gateway's and the notebook's APIs start kernels.  The browser always sends the name
it resolved in ``Host``, so a server answers only requests that name it:

* loopback under the names local clients use: ``localhost``, ``127.0.0.1``, ``[::1]``;
* the deployment's names, ``SANDBOX_ALLOWED_HOSTS`` (the file server adds its own settings); an
  entry with a leading dot allows that domain's subdomains (``.svc.cluster.local``);
* the IP address the request arrived on: what a kubelet probe or a Prometheus scrape of the pod
  IP sends, and what a rebinding page cannot, since it was not loaded from that address.

Other IP literals are refused too: no legitimate client needs one but the address it connected
to, and refusing them closes the gap where an address routed here by something else (a port
published on another interface, a NodePort, a proxy) would be answered without being named.
A missing, repeated or malformed ``Host`` gets 400 (RFC 9112 §3.2); a well-formed name the server
does not answer to, 421 Misdirected Request.  The check reads the header and the local address,
never the peer, so Docker's port forwarding (which rewrites the peer) neither defeats nor trips it.

The core is stdlib only (the file server imports it without tornado); ``apply()`` puts it in
front of routing in the process's tornado applications (Enterprise Gateway, the notebook's
jupyter_server), so no handler can skip it, websocket upgrades included.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
from collections.abc import Collection, Mapping, Sequence
from http import HTTPStatus
from typing import Any

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")

_NAME = re.compile(r"(?:[a-z0-9_-]+\.)*[a-z0-9_-]+\.?")
_BRACKETED = re.compile(r"\[([0-9a-f:.]+)\]")
_PORT = re.compile(r"[0-9]{0,5}")
# Bounds what a refusal echoes back of an attacker-chosen header.
_MAX_SHOWN = 100

log = logging.getLogger("sandbox_hosts")


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
    """The allow-list form of a configured entry; ``ValueError`` unless it is a bare host name,
    an IP literal or ``.domain``.

    ``.example.org`` allows the subdomains of example.org, not example.org itself.  Its last label
    may not be a number, so that no such entry matches IPv4 literals.
    """
    text = entry.strip()
    domain = text.startswith(".")
    parsed = split_host(text[1:] if domain else text)
    if (
        parsed is None
        or parsed[1] is not None
        or (domain and (parsed[0].startswith("[") or parsed[0].rsplit(".", 1)[-1].isdigit()))
    ):
        raise ValueError(
            f"{entry!r} is not a host name, IP literal or .domain (give names without scheme, "
            "port, path or wildcard, e.g. files.example.org, [2001:db8::1], or .example.org for "
            "the subdomains of example.org)"
        )
    return "." + parsed[0] if domain else parsed[0]


def allowed_hosts(env: Mapping[str, str] | None = None) -> frozenset[str]:
    """The loopback names and ``SANDBOX_ALLOWED_HOSTS`` (comma list), normalised;
    ``ValueError`` naming the variable for a bad entry."""
    env = os.environ if env is None else env
    entries = [item for item in env.get("SANDBOX_ALLOWED_HOSTS", "").split(",") if item.strip()]
    try:
        return frozenset((*LOOPBACK_HOSTS, *(normalise_allowed_host(item) for item in entries)))
    except ValueError as error:
        raise ValueError(f"SANDBOX_ALLOWED_HOSTS: {error}") from None


def local_address_name(address: object) -> str | None:
    """The ``Host`` form of the address a connection arrived on, given as a socket address
    (``socket.getsockname()``, ASGI ``scope["server"]``); ``None`` unless that is an IP."""
    if not isinstance(address, (tuple, list)) or not address or not isinstance(address[0], str):
        return None
    try:
        ip = ipaddress.ip_address(address[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        # A dual-stack socket reports an IPv4 client's connection in this form.
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return f"[{ip.compressed}]"
    return str(ip)


def refusal(
    host_values: Sequence[str],
    allowed: Collection[str],
    local: str | None = None,
    setting: str = "SANDBOX_ALLOWED_HOSTS",
) -> tuple[int, str] | None:
    """``(status, detail)`` when a request with these ``Host`` header values must be refused,
    else ``None``.

    ``allowed`` holds normalised entries (``normalise_allowed_host``), ``local`` the address the
    request arrived on (``local_address_name``), ``setting`` where the detail says to add a name.
    """
    if not host_values:
        return 400, "the request has no Host header"
    if len(host_values) > 1:
        return 400, "the request has more than one Host header"
    shown = host_values[0][:_MAX_SHOWN]
    parsed = split_host(host_values[0])
    if parsed is None:
        return 400, f"malformed Host header {shown!r}"
    name = parsed[0]
    if name in allowed or name == local:
        return None
    if any(entry.startswith(".") and name.endswith(entry) for entry in allowed):
        return None
    return 421, (
        f"this server does not answer to the name {shown!r}; add it to {setting} if it is "
        "one of this server's names"
    )


def _local_address(request: Any) -> str | None:
    """The address a tornado request's connection arrived on (its HTTP/1 connection's socket)."""
    stream = getattr(request.connection, "stream", None)
    sock = getattr(stream, "socket", None)
    if sock is None:
        return None
    try:
        return local_address_name(sock.getsockname())
    except OSError:
        return None


def apply(env: Mapping[str, str] | None = None) -> None:
    """Refuse, before routing, every request of this process's tornado applications whose ``Host``
    does not name this server.  A bad ``SANDBOX_ALLOWED_HOSTS`` exits with a message and patches
    nothing: ``SystemExit``, which a config file loader does not catch and skip (fail open) as it
    does an ``Exception``."""
    from tornado import httputil, web

    try:
        allowed = allowed_hosts(env)
    except ValueError as exc:
        raise SystemExit(f"invalid setting: {exc}") from None

    # Streaming: the refusal is sent before any body is read, and tornado then closes the
    # connection instead of buffering what a rebinding page uploads.
    @web.stream_request_body
    class ForeignHostHandler(web.RequestHandler):
        def initialize(self, status: int, detail: str) -> None:
            self.refused = (status, detail)
            # Whatever the method (PROPFIND too), the answer is the refusal, not a 405.
            self.SUPPORTED_METHODS = (str(self.request.method),)

        def check_xsrf_cookie(self) -> None:
            """No check: the request is refused whatever its token (a 403 would hide why)."""

        def prepare(self) -> None:
            status, detail = self.refused
            log.warning("refused a request: %s", detail)
            self.set_status(status)
            self.set_header("Content-Type", "application/json")
            # The shape of tornado's and Enterprise Gateway's JSON errors.
            self.finish(json.dumps({"reason": HTTPStatus(status).phrase, "message": detail}))

    original = web.Application.find_handler

    def find_handler(
        self: web.Application, request: httputil.HTTPServerRequest, **kwargs: Any
    ) -> Any:
        refused = refusal(request.headers.get_list("Host"), allowed, _local_address(request))
        if refused is None:
            return original(self, request, **kwargs)
        status, detail = refused
        return self.get_handler_delegate(
            request, ForeignHostHandler, {"status": status, "detail": detail}
        )

    web.Application.find_handler = find_handler  # type: ignore[method-assign]
