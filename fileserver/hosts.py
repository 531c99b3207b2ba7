"""The ``Host`` allow-list as a pure ASGI middleware: the defence against DNS rebinding (SPEC §5a).

The rule, and the code deciding it, are those of the gateway and the notebook
(``sandbox_gateway.http.hosts``); the file server also answers to its compose service name and
to ``FILE_SERVER_ALLOWED_HOSTS`` (``Settings.host_allow_list``).

It runs before routing, so it covers every route, ``/health``, ``/openapi.json`` and unknown
paths included, and before authentication, so a valid token does not get a foreign name in.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox_gateway.http.hosts import LOOPBACK_HOSTS, local_address_name, refusal

# The compose service name besides loopback (the Dockerfile's healthcheck calls 127.0.0.1:8080
# from inside the container).
DEFAULT_ALLOWED_HOSTS = (*LOOPBACK_HOSTS, "fileserver")

_SETTING = "FILE_SERVER_ALLOWED_HOSTS (or SANDBOX_ALLOWED_HOSTS)"


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
        hosts = [value.decode("latin-1") for key, value in scope["headers"] if key == b"host"]
        local = local_address_name(scope.get("server"))
        refused = refusal(hosts, self.allowed_hosts(), local, _SETTING)
        if refused is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            # Closing before accepting makes the server answer the upgrade with 403.
            await receive()
            await send({"type": "websocket.close", "code": 1008, "reason": "Host not allowed"})
        else:
            status, detail = refused
            await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)
