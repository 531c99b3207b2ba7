"""What a browser sends, spoken by hand: for checks that a client library would smooth over."""

from __future__ import annotations

import base64
import os
import socket


def upgrade_status(port: int, path: str, host: str, headers: dict[str, str] | None = None) -> int:
    """The status of a raw websocket upgrade request to 127.0.0.1:port with this Host header
    (and ``headers``)."""
    key = base64.b64encode(os.urandom(16)).decode()
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode())
        status_line = sock.recv(4096).split(b"\r\n", 1)[0].decode()
    return int(status_line.split()[1])
