"""Kernel websocket between the browser and Enterprise Gateway 3.3, with protocol translation.

JupyterLab 4 / Notebook 7 in the browser asks for the ``v1.kernel.websocket.jupyter.org``
websocket subprotocol.  jupyter_server's gateway connection forces the legacy JSON protocol
(EG 3.3 runs jupyter_server 1.x, which knows no other) by answering without a subprotocol — and
Chromium then aborts the handshake ("Sent non-empty 'Sec-WebSocket-Protocol' header but no
response was received"), so no cell can run.  This connection accepts v1 towards the browser and
translates each message to and from the legacy format the gateway speaks.
"""

from __future__ import annotations

import json
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
    """A gateway (legacy) message as the browser's v1 binary frame."""
    binary = isinstance(message, bytes)
    msg = deserialize_binary_message(message) if binary else json.loads(message)
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
            return self.websocket_handler.selected_subprotocol  # type: ignore[no-any-return]
        except AssertionError as exc:  # tornado asserts an open connection here
            raise tornado_websocket.WebSocketClosedError() from exc

    def handle_incoming_message(self, message: Any) -> None:
        if isinstance(message, bytes) and self._browser_protocol() is not None:
            message = v1_to_legacy(message)
        super().handle_incoming_message(message)

    def handle_outgoing_message(self, incoming_msg: Any, *args: Any) -> None:
        try:
            if self._browser_protocol() is None:
                super().handle_outgoing_message(incoming_msg, *args)
                return
            frame = legacy_to_v1(incoming_msg)
            self.websocket_handler.write_message(frame, binary=True)
        except tornado_websocket.WebSocketClosedError:
            self.log.debug("notebook client closed its websocket; message dropped")
        except (ValueError, KeyError, TypeError):
            self.log.warning("dropping a gateway message that is not a kernel message")
