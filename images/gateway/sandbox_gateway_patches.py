"""Fixes applied to Enterprise Gateway 3.3 at start-up (loaded by the gateway's config file).

TCP_NODELAY on kernel websockets: the gateway writes every kernel message as its own small
websocket frame.  With Nagle's algorithm on, the second frame of a reply waits for the ACK of
the first, and the client delays that ACK by up to 40 ms (Linux TCP_DELACK_MIN), so every
execute round trip took ~44 ms instead of ~5 ms.  Disabling Nagle on the server side removes
the stall for every client, the notebook included.
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


def apply() -> None:
    """Apply every fix; safe to call once per process."""
    _enable_nodelay()
