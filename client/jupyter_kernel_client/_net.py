"""Socket tuning shared by both faces."""

from __future__ import annotations

import contextlib
import socket


def quickack(sock: socket.socket | None) -> None:
    """Acknowledge received data now instead of after the 40 ms delayed-ACK timer.

    A gateway that leaves Nagle's algorithm on holds each further small frame until the
    previous one is acknowledged; without this, every round trip to such a gateway (stock
    Enterprise Gateway 3.3 is one) costs ~40 ms.  Linux-only; the flag is not sticky, so it
    is set after every receive.
    """
    if sock is not None and hasattr(socket, "TCP_QUICKACK"):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
