"""Kernel websocket between the browser and Enterprise Gateway 3.3, with protocol translation.

JupyterLab 4 / Notebook 7 in the browser asks for the ``v1.kernel.websocket.jupyter.org``
websocket subprotocol.  jupyter_server's gateway connection forces the legacy JSON protocol
(EG 3.3 runs jupyter_server 1.x, which knows no other) by answering without a subprotocol — and
Chromium then aborts the handshake ("Sent non-empty 'Sec-WebSocket-Protocol' header but no
response was received"), so no cell can run.  This connection accepts v1 towards the browser and
translates each message to and from the legacy format the gateway speaks.

On the way to the browser it also drops the output MIME types whose renderer runs the output as
code (:data:`EXECUTABLE_MIME`).  Kernel output is hostile (SPEC §5a), and the page's
Content-Security-Policy has to allow ``'unsafe-eval'`` for the UI's own schema validation, so
it cannot stop the renderers that ``eval`` output data.  Notebook 7.3 loads its built-in MIME
renderers even when page_config.json disables them (only JupyterLab honours that), so the
kernel's message is where they can be taken out: the browser never receives them, on any page.

The notebook's connection to the gateway reads messages of up to
:data:`GATEWAY_MAX_MESSAGE_BYTES` (:func:`apply`): tornado's websocket client closes the
connection on anything above 10 MiB, below the gateway's own bound on kernel messages
(``SANDBOX_MAX_MESSAGE_BYTES``, 16 MiB by default, past which the gateway cuts the message), so
one large print broke the tab's kernel connection instead of arriving cut.
"""

from __future__ import annotations

import json
import re
from typing import Any

import tornado.websocket as tornado_websocket
from jupyter_server.gateway.connections import GatewayWebSocketConnection
from jupyter_server.services.kernels.connection.base import (
    deserialize_binary_message,
    deserialize_msg_from_ws_v1,
    serialize_binary_message,
    serialize_msg_to_ws_v1,
)
from traitlets import Unicode

_PARTS = ("header", "parent_header", "metadata", "content")

#: Largest message the notebook reads from the gateway: above the gateway's default bound on a
#: kernel message (16 MiB and a notice line), with room for a gateway configured higher.
GATEWAY_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

#: Output MIME types that a renderer turns into running code: JavaScript (``eval``ed by the
#: javascript extension) and Vega / Vega-Lite specs (expressions compiled with ``Function``).
EXECUTABLE_MIME = re.compile(
    r"^(application|text)/(x-)?(javascript|ecmascript)$|^application/vnd\.vega(lite)?\.",
    re.IGNORECASE,
)


def _strip_bundle(bundle: Any) -> None:
    if isinstance(bundle, dict):
        for mime in [key for key in bundle if EXECUTABLE_MIME.match(str(key))]:
            del bundle[mime]


def strip_executable_outputs(msg: dict[str, Any]) -> dict[str, Any]:
    """Remove executable MIME types from every MIME bundle of a kernel message, in place.

    Bundles sit in ``content.data`` (display_data, execute_result, update_display_data,
    inspect_reply) and in ``content.payload[].data`` (the pager payload of execute_reply).
    The rest of each bundle (text/plain, images, HTML) is kept, so the output shows as the next
    representation, like in a front end without those renderers.
    """
    content = msg.get("content")
    if isinstance(content, dict):
        _strip_bundle(content.get("data"))
        for payload in content.get("payload") or []:
            if isinstance(payload, dict):
                _strip_bundle(payload.get("data"))
    return msg


def legacy_stripped(message: str | bytes) -> str | bytes:
    """A gateway (legacy) message for a legacy browser, executable outputs removed."""
    if isinstance(message, bytes):
        return bytes(
            serialize_binary_message(strip_executable_outputs(deserialize_binary_message(message)))
        )
    return json.dumps(strip_executable_outputs(json.loads(message)), default=str)


def v1_to_legacy(message: bytes) -> str | bytes:
    """A browser (v1) message as the gateway's legacy JSON (binary when it has buffers)."""
    channel, parts = deserialize_msg_from_ws_v1(message)
    msg: dict[str, Any] = {
        key: json.loads(part) for key, part in zip(_PARTS, parts[:4], strict=True)
    }
    msg["channel"] = channel
    buffers = [bytes(buffer) for buffer in parts[4:]]
    if buffers:
        msg["buffers"] = buffers
        return bytes(serialize_binary_message(msg))
    msg["buffers"] = []
    return json.dumps(msg)


def legacy_to_v1(message: str | bytes) -> bytes:
    """A gateway (legacy) message as the browser's v1 binary frame, executable outputs removed."""
    binary = isinstance(message, bytes)
    msg = deserialize_binary_message(message) if binary else json.loads(message)
    strip_executable_outputs(msg)
    parts = [json.dumps(msg.get(key) or {}, default=str).encode() for key in _PARTS]
    parts.extend(bytes(buffer) for buffer in msg.get("buffers") or [])
    return bytes(serialize_msg_to_ws_v1(parts, msg.get("channel") or "iopub"))


class TranslatingGatewayWebSocketConnection(GatewayWebSocketConnection):
    """Gateway kernel websocket that speaks v1 to the browser and legacy to the gateway."""

    # None: let the browser's preferred (v1) protocol be selected in the handshake.
    kernel_ws_protocol = Unicode(None, allow_none=True, config=True)

    def _browser_protocol(self) -> str | None:
        """The subprotocol agreed with the browser; raises WebSocketClosedError once it left."""
        try:
            return self.websocket_handler.selected_subprotocol
        except AssertionError as exc:  # tornado asserts an open connection here
            raise tornado_websocket.WebSocketClosedError() from exc

    def handle_incoming_message(self, message: Any) -> None:
        if isinstance(message, bytes) and self._browser_protocol() is not None:
            message = v1_to_legacy(message)
        super().handle_incoming_message(message)

    def handle_outgoing_message(self, incoming_msg: Any, *args: Any) -> None:
        try:
            if self._browser_protocol() is None:
                # Annotated str, written as it is: a binary message (bytes) goes through too.
                super().handle_outgoing_message(legacy_stripped(incoming_msg), *args)  # type: ignore[arg-type]
                return
            frame = legacy_to_v1(incoming_msg)
            self.websocket_handler.write_message(frame, binary=True)
        except tornado_websocket.WebSocketClosedError:
            self.log.debug("notebook client closed its websocket; message dropped")
        except (ValueError, KeyError, TypeError):
            self.log.warning("dropping a gateway message that is not a kernel message")


class _GatewayWebsocketModule:
    """``tornado.websocket`` as jupyter_server's gateway connection calls it, with its client's
    message size limit raised to :data:`GATEWAY_MAX_MESSAGE_BYTES`."""

    def __getattr__(self, name: str) -> Any:
        return getattr(tornado_websocket, name)

    @staticmethod
    def websocket_connect(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("max_message_size", GATEWAY_MAX_MESSAGE_BYTES)
        return tornado_websocket.websocket_connect(*args, **kwargs)


def apply() -> None:
    """Let the gateway connection read messages up to :data:`GATEWAY_MAX_MESSAGE_BYTES`."""
    import jupyter_server.gateway.connections as connections

    connections.tornado_websocket = _GatewayWebsocketModule()  # type: ignore[attr-defined, assignment]
