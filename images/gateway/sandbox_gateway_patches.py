"""Fixes applied to Enterprise Gateway 3.3 at start-up (loaded by the gateway's config file).

TCP_NODELAY on kernel websockets: the gateway writes every kernel message as its own small
websocket frame.  With Nagle's algorithm on, the second frame of a reply waits for the ACK of
the first, and the client delays that ACK by up to 40 ms (Linux TCP_DELACK_MIN), so every
execute round trip took ~44 ms instead of ~5 ms.  Disabling Nagle on the server side removes
the stall for every client, the notebook included.

Client errors as 4xx, never a traceback: stock EG 3.3 answers ``POST /api/kernels`` with an
unknown kernel name as 500 with the server's full Python traceback in the JSON body (and any
other unexpected exception the same way).  A bad name is the client's error: it becomes 404 with
the reason "No such kernel named <name>".  Every other unexpected exception keeps its 5xx status
but its body carries only a plain reason; the traceback stays in the gateway's log, where tornado
has already written it, and never reaches a client (it leaks paths, versions and code).

The launch-response socket is replaced as a whole by ``sandbox_response``.
"""

from __future__ import annotations

from typing import Any


def _enable_nodelay() -> None:
    from enterprise_gateway.services.kernels.handlers import ZMQChannelsHandler

    original_open = ZMQChannelsHandler.open

    def open_with_nodelay(self: Any, *args: Any, **kwargs: Any) -> Any:
        self.set_nodelay(True)
        return original_open(self, *args, **kwargs)

    ZMQChannelsHandler.open = open_with_nodelay


def _client_errors_without_tracebacks() -> None:
    from enterprise_gateway.mixins import JSONErrorsMixin
    from enterprise_gateway.services.kernels.handlers import MainKernelHandler
    from jupyter_client.kernelspec import NoSuchKernel
    from jupyter_server.base.handlers import APIHandler
    from tornado import web

    def plain_error(handler: Any, status_code: int, exc_info: Any) -> tuple[int, Any]:
        exception = exc_info[1] if exc_info else None
        if exception is None or isinstance(exception, web.HTTPError):
            return status_code, exc_info  # already a deliberate answer without a traceback
        if isinstance(exception, NoSuchKernel):
            status_code = 404
            reason = str(exception)  # "No such kernel named <name>"
            replacement = web.HTTPError(status_code, reason, reason=reason)
        else:
            replacement = web.HTTPError(
                status_code, "internal gateway error (details are in the gateway log)"
            )
        handler.set_status(status_code)
        return status_code, (type(replacement), replacement, None)

    for cls in (JSONErrorsMixin, APIHandler):
        original = cls.write_error

        def write_error(
            self: Any, status_code: int, _original: Any = original, **kwargs: Any
        ) -> Any:
            status_code, kwargs["exc_info"] = plain_error(self, status_code, kwargs.get("exc_info"))
            return _original(self, status_code, **kwargs)

        cls.write_error = write_error

    # A start request whose body has the wrong shape failed deep inside jupyter_server (500).
    original_post = MainKernelHandler.post

    async def post(self: Any) -> Any:
        model = self.get_json_body()  # malformed JSON is already a 400 here
        if model is not None:
            if not isinstance(model, dict):
                raise web.HTTPError(400, "the request body must be a JSON object")
            name = model.get("name")
            if name is not None and not (isinstance(name, str) and name.strip()):
                raise web.HTTPError(400, "the kernel name must be a non-empty string")
        return await original_post(self)

    MainKernelHandler.post = post


def apply() -> None:
    """Apply every fix; safe to call once per process."""
    _enable_nodelay()
    _client_errors_without_tracebacks()
