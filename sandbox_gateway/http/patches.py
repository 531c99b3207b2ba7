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

Each start request's env goes to its own kernel only: stock EG 3.3 handed a start request's
``env`` (and ``kernel_headers``) to the kernel manager by replacing the manager's
``start_kernel`` with a ``functools.partial`` carrying them for the duration of the request,
then putting back what it had found.  Two overlapping starts A and B with an env, A ending first,
left A's partial in place for good (B had found it and put it back): every later start without
an env ran with A's env (A's user, A's ``KERNEL_*`` variables), a leak from one tenant to the
others.  The start handler now calls ``start_kernel`` with the request's own arguments and
mutates nothing shared; its checks, answers and their order are EG's (and jupyter_server's).
Arguments rather than a context variable read further down: the ``start_kernel`` wrappers of
``admission.limits`` and ``pool.manager`` take the user and the kernel variables from them.

Kernel activity read cheaply: jupyter_server tracks each kernel's last activity and execution
state by fully deserialising (HMAC, JSON, date parsing) every iopub message twice; the gateway
now reads the one field it needs from the raw frames (same result, about a quarter of the
gateway's CPU per execute under load).

The launch-response socket is replaced as a whole by ``sandbox_gateway.response``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, cast


def _enable_nodelay() -> None:
    from enterprise_gateway.services.kernels.handlers import ZMQChannelsHandler

    original_open: Callable[..., Any] = ZMQChannelsHandler.open

    def open_with_nodelay(self: Any, *args: Any, **kwargs: Any) -> Any:
        self.set_nodelay(True)
        return original_open(self, *args, **kwargs)

    ZMQChannelsHandler.open = open_with_nodelay  # type: ignore[method-assign]


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

        cls.write_error = write_error  # type: ignore[method-assign]

    # A start request whose body has the wrong shape failed deep inside jupyter_server (500).
    original_post: Callable[..., Any] = MainKernelHandler.post

    async def post(self: Any) -> Any:
        model = self.get_json_body()  # malformed JSON is already a 400 here
        if model is not None:
            if not isinstance(model, dict):
                raise web.HTTPError(400, "the request body must be a JSON object")
            name = model.get("name")
            if name is not None and not (isinstance(name, str) and name.strip()):
                raise web.HTTPError(400, "the kernel name must be a non-empty string")
        return await original_post(self)

    MainKernelHandler.post = post  # type: ignore[method-assign]


def _env_per_start_request() -> None:
    import jupyter_server.services.kernels.handlers as jupyter_server_handlers
    from enterprise_gateway.services.kernels.handlers import MainKernelHandler
    from jupyter_server.auth import authorized  # type: ignore[attr-defined]  # no __all__ in 1.24
    from jupyter_server.utils import ensure_async, url_escape, url_path_join
    from tornado import web

    # jupyter_server's MainKernelHandler.post (1.24), with the start arguments passed in: EG could
    # not pass them through it, hence its swap of the shared manager's start_kernel.
    @web.authenticated
    @authorized
    async def start(self: Any, start_args: dict[str, Any]) -> None:
        km = self.kernel_manager
        model = self.get_json_body()
        if model is None:
            model = {"name": km.default_kernel_name}
        else:
            model.setdefault("name", km.default_kernel_name)
        kernel_id = await ensure_async(
            km.start_kernel(kernel_name=model["name"], path=model.get("path"), **start_args)
        )
        model = await ensure_async(km.kernel_model(kernel_id))
        location = url_path_join(self.base_url, "api", "kernels", url_escape(kernel_id))
        self.set_header("Location", location)
        self.set_status(201)
        self.finish(
            json.dumps(model, default=jupyter_server_handlers.json_default)  # type: ignore[attr-defined]
        )

    # EG 3.3's MainKernelHandler.post, but the env and headers travel as arguments of this call.
    async def post(self: Any) -> None:
        max_kernels = self.settings["eg_max_kernels"]
        if max_kernels is not None:
            km = self.settings["kernel_manager"]
            if len(km.list_kernels()) >= max_kernels:
                raise web.HTTPError(403, "Resource Limit")
        model = self.get_json_body()
        start_args: dict[str, Any] = {}
        if model is not None and "env" in model:
            if not isinstance(model["env"], dict):
                raise web.HTTPError(400)
            start_args["env"] = self._build_kernel_env(model["env"])
            start_args["kernel_headers"] = self._build_kernel_headers()
        # tornado types what its decorators return as maybe not awaitable: start is a coroutine.
        await cast(Awaitable[None], start(self, start_args))

    MainKernelHandler.post = post  # type: ignore[method-assign]


def _light_activity_tracking() -> None:
    from jupyter_server._tz import utcnow
    from jupyter_server.services.kernels.kernelmanager import MappingKernelManager

    original: Callable[..., Any] = MappingKernelManager.start_watching_activity

    def start_watching_activity(self: Any, kernel_id: str) -> None:
        original(self, kernel_id)
        kernel = self._kernels[kernel_id]

        # What jupyter_server's own callback records, read from the raw frames: it verified and
        # deserialised every iopub message twice (HMAC, JSON, dates parsed with dateutil) only to
        # read one field, ~28 % of the gateway's CPU per execute under load (py-spy).  The state
        # is the kernel's own to report; nothing here is trusted beyond that kernel.
        def record_activity(frames: list[bytes]) -> None:
            self.last_kernel_activity = kernel.last_activity = utcnow()
            try:
                parts = frames[frames.index(b"<IDS|MSG>") + 2 :]
                if json.loads(parts[0]).get("msg_type") == "status":
                    state = json.loads(parts[3]).get("execution_state")
                    if isinstance(state, str):
                        kernel.execution_state = state
            except (ValueError, IndexError, AttributeError):
                pass  # not a Jupyter message: activity only

        kernel._activity_stream.on_recv(record_activity)

    MappingKernelManager.start_watching_activity = start_watching_activity  # type: ignore[method-assign]


def apply() -> None:
    """Apply every fix; safe to call once per process."""
    _enable_nodelay()
    _light_activity_tracking()
    _env_per_start_request()  # first: the checks of start requests wrap this handler
    _client_errors_without_tracebacks()
