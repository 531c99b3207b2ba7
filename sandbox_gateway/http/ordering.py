"""A request's ``idle`` after its outputs, for kernels that publish it too early.

The Jupyter protocol sends a request's ``status: idle`` on iopub after every output of that
request, and clients rely on it: the Python client and the notebook stop collecting a cell's
output at its idle.  Deno's kernel (2.9) publishes outputs from a task of their own and breaks
that order: measured on 300 executions, 54 had an ``execute_result`` or ``stream`` after their
idle (by at most 0.9 ms at the kernel), which every client then lost or put under no cell.

For a kernelspec whose metadata holds ``"sandbox": {"late_output_grace": <seconds>}`` the
gateway holds the idle of an ``execute_request`` that long on its way to each websocket, and
forwards whatever of that request comes meanwhile first.  Other kernels' messages pass as
before, at the cost of one attribute read per message.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, Final

log = logging.getLogger(__name__)

Frames = Sequence[bytes]
METADATA_KEY: Final = "late_output_grace"
MAX_GRACE: Final = 1.0  # seconds; more would only make every cell slower


def grace_of(spec: Any) -> float:
    """The kernelspec's late-output grace in seconds (0: none); a bad value counts as none."""
    metadata = getattr(spec, "metadata", None) or {}
    sandbox = metadata.get("sandbox") if isinstance(metadata, dict) else None
    value = sandbox.get(METADATA_KEY, 0) if isinstance(sandbox, dict) else 0
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_GRACE:
        log.warning(
            "kernelspec metadata sandbox.%s=%r is not 0..%g s: ignored",
            METADATA_KEY,
            value,
            MAX_GRACE,
        )
        return 0.0
    return float(value)


def is_execute_idle(frames: Frames) -> bool:
    """Whether an iopub message (its frames after the delimiter: signature, header, parent
    header, metadata, content) is the idle that ends an execute request."""
    if len(frames) < 5 or b'"status"' not in frames[1]:
        return False
    try:
        header, parent, content = (
            json.loads(frames[1]),
            json.loads(frames[2]),
            json.loads(frames[4]),
        )
    except ValueError:
        return False
    return (
        isinstance(header, dict)
        and header.get("msg_type") == "status"
        and isinstance(content, dict)
        and content.get("execution_state") == "idle"
        and isinstance(parent, dict)
        and parent.get("msg_type") == "execute_request"
    )


def _handler_grace(handler: Any) -> float:
    grace: float | None = getattr(handler, "_sandbox_late_output_grace", None)
    if grace is None:
        try:
            spec = handler.kernel_manager.get_kernel(handler.kernel_id).kernel_spec
        except Exception:  # a kernel gone meanwhile: nothing to hold for
            spec = None
        grace = grace_of(spec)
        handler._sandbox_late_output_grace = grace
    return grace


def _hold_execute_idle() -> None:
    from jupyter_server.services.kernels.handlers import ZMQChannelsHandler
    from tornado.ioloop import IOLoop

    original: Callable[..., Any] = ZMQChannelsHandler._on_zmq_reply

    def _on_zmq_reply(self: Any, stream: Any, msg_list: Frames) -> Any:
        if getattr(stream, "channel", None) == "iopub":
            grace = _handler_grace(self)
            if grace:
                _, frames = self.session.feed_identities(msg_list)
                if is_execute_idle(frames):
                    IOLoop.current().call_later(grace, original, self, stream, msg_list)
                    return None
        return original(self, stream, msg_list)

    ZMQChannelsHandler._on_zmq_reply = _on_zmq_reply  # type: ignore[method-assign]


def apply() -> None:
    _hold_execute_idle()
