"""A large output through the notebook: the gateway bounds each kernel message, and the notebook's
own connection to the gateway reads up to that bound, so the tab's kernel websocket gets the
message (cut above the bound, with the gateway's notice) and keeps working.

Driven as the page drives it: the notebook's REST API with its ``_xsrf`` cookie, then its kernel
websocket in the legacy JSON protocol, from loopback through Docker's published port.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import websocket

from .conftest import Stack

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
GATEWAY_BOUND = 16 * MIB  # the compose stack's SANDBOX_MAX_MESSAGE_BYTES


@pytest.fixture
def channels(stack: Stack) -> Iterator[websocket.WebSocket]:
    notebook = stack.notebook_api()
    started = notebook.post(
        f"{stack.notebook_url}/api/kernels", json={"name": "python3"}, timeout=120
    )
    assert started.status_code == 201, started.text
    kernel_id = started.json()["id"]
    ws_base = stack.notebook_url.replace("http://", "ws://")
    conn = websocket.create_connection(
        f"{ws_base}/api/kernels/{kernel_id}/channels?session_id={uuid.uuid4().hex}", timeout=120
    )
    try:
        yield conn
    finally:
        conn.close()
        notebook.delete(f"{stack.notebook_url}/api/kernels/{kernel_id}", timeout=60)


def run(conn: websocket.WebSocket, code: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Execute ``code``; the execute_reply and the stream messages of that request."""
    msg_id = uuid.uuid4().hex
    request = {
        "header": {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "username": "e2e",
            "session": uuid.uuid4().hex,
            "version": "5.3",
            "date": "",
        },
        "parent_header": {},
        "metadata": {},
        "content": {
            "code": code,
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        "channel": "shell",
        "buffers": [],
    }
    conn.send(json.dumps(request))
    streams: list[dict[str, Any]] = []
    reply: dict[str, Any] | None = None
    idle = False
    while reply is None or not idle:
        message = json.loads(conn.recv())
        if message.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = message["header"]["msg_type"]
        if kind == "stream":
            streams.append(message)
        elif kind == "execute_reply":
            reply = message
        elif kind == "status" and message["content"]["execution_state"] == "idle":
            idle = True
    return reply, streams


def test_a_message_between_tornados_limit_and_the_gateways_bound_arrives_whole(
    channels: websocket.WebSocket,
) -> None:
    """12 MiB in one message: under the gateway's bound, over tornado's 10 MiB default, which
    closed the notebook's connection to the gateway."""
    reply, streams = run(channels, f"print('x' * {12 * MIB}, end='')")
    assert reply["content"]["status"] == "ok"
    assert sum(len(s["content"]["text"]) for s in streams) == 12 * MIB
    assert not any("sandbox_truncated" in s.get("metadata", {}) for s in streams)


def test_a_message_above_the_gateways_bound_arrives_cut_and_the_tab_keeps_its_kernel(
    channels: websocket.WebSocket,
) -> None:
    reply, streams = run(channels, f"print('y' * {40 * MIB}, end='')")
    assert reply["content"]["status"] == "ok"
    (stream,) = streams
    text = stream["content"]["text"]
    assert text.startswith("y" * MIB) and len(text) < GATEWAY_BOUND + 4096
    assert "SANDBOX_MAX_MESSAGE_BYTES" in text  # the gateway's notice, shown in the cell
    assert stream["metadata"]["sandbox_truncated"]["msg_type"] == "stream"
    # The same websocket, the same kernel: it still runs code.
    reply, streams = run(channels, "print(6 * 7)")
    assert reply["content"]["status"] == "ok"
    assert [s["content"]["text"] for s in streams] == ["42\n"]
