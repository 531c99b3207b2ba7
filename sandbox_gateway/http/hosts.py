"""The gateway answers only requests addressed to one of its own names (DNS rebinding).

A web page the user visits can make the browser send requests to 127.0.0.1 under the page's own
host name (DNS rebinding); binding to loopback does not keep it out, and the gateway's API can
start kernels.  The browser always sends the name it resolved in ``Host``, so a request whose
``Host`` is neither an allowed name nor an IP literal is refused with 400, before any handler
runs — websocket upgrades included, since they are routed the same way.

Allowed:

* any IP literal (``127.0.0.1:8889``, ``[::1]``, a pod IP from a kubelet probe): a rebinding page
  cannot make the browser send one, because it never loaded from that address;
* ``localhost`` and the names of this deployment: ``SANDBOX_ALLOWED_HOSTS`` (comma list; compose
  sets the service names, the chart its Service names and ingress hosts).  An entry starting
  with a dot allows that domain's subdomains (``.svc.cluster.local``).

The check is in front of routing (``Application.find_handler``), so no handler of Enterprise
Gateway or jupyter_server can forget it; Docker's port forwarding changes the source address,
never the ``Host`` header.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
from typing import Any

DEFAULT_HOSTS = ("localhost",)
_HOST = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[^:\[\]]*)(:\d{1,5})?$")

log = logging.getLogger("sandbox_hosts")


def allowed_hosts(env: dict[str, str] | os._Environ[str] | None = None) -> tuple[str, ...]:
    env = os.environ if env is None else env
    listed = [item.strip().lower() for item in env.get("SANDBOX_ALLOWED_HOSTS", "").split(",")]
    return DEFAULT_HOSTS + tuple(item for item in listed if item)


def host_allowed(header: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether a ``Host`` header names this service (the port is ignored)."""
    if not header:
        return False
    match = _HOST.match(header.strip())
    if not match:
        return False
    host = match.group(1).lower()
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        pass
    host = host.rstrip(".")
    return any(host == name or (name.startswith(".") and host.endswith(name)) for name in allowed)


def apply() -> None:
    """Refuse foreign ``Host`` headers on every route of the gateway's web application."""
    from tornado import web

    allowed = allowed_hosts()

    class ForeignHostHandler(web.RequestHandler):
        def prepare(self) -> None:
            log.warning("refused a request for foreign host %r", self.request.host)
            self.set_status(400)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"reason": "host not allowed", "message": "host not allowed"}))

    original = web.Application.find_handler

    def find_handler(self: web.Application, request: Any, **kwargs: Any) -> Any:
        if not host_allowed(request.headers.get("Host"), allowed):
            return self.get_handler_delegate(request, ForeignHostHandler)
        return original(self, request, **kwargs)

    web.Application.find_handler = find_handler  # type: ignore[method-assign]
