"""Enterprise Gateway's ResponseManager in its own venv, driven over stdin/stdout by a test.

Run with the EG venv's python: ``response_harness.py PATCHES_DIR LAUNCHERS_DIR [--stock]``.
``EG_RESPONSE_IP``/``EG_RESPONSE_PORT`` and ``SANDBOX_RESPONSE_*`` come from the environment.
It prints one JSON line ``{"address", "public_key"}`` once the manager listens, then answers one
JSON line per request line:

- ``{"op": "register", "kernel_id"}`` registers a kernel id, as a process proxy does;
- ``{"op": "payload", "info", "version"}`` encrypts ``info`` as a launcher does: version 1 with
  gateway_provisioners' own ``ServerListener._encrypt``, version 0 with the legacy AES key
  ``kernel_id[:16]`` (what anyone who knows a kernel id can forge);
- ``{"op": "wait", "kernel_id", "peer", "timeout"}`` polls ``get_connection_info`` as a process
  proxy's launch loop does, until an answer or ``timeout``;
- ``{"op": "state"}`` returns registered ids, open connections, answers held against the cap
  (``held``) and the bytes of all answers held (``held_bytes``), warnings logged, connections
  finished with (``handled``) and the event loop's longest stall since the previous ``state``.

``--stock`` leaves EG's own ResponseManager in place (the code this project replaced).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sys
import time
from typing import Any


class _Warnings(logging.Handler):
    """The manager's warnings, and how many response connections it has finished with."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.handled = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        # Each connection ends in one line: its answer received, its refusal, or its eviction.
        if message.startswith("Launch response") and any(
            end in message for end in (" received from ", " refused", " closed")
        ):
            self.handled += 1
        if record.levelno >= logging.WARNING:
            self.lines.append(message)


async def _watch_lag(stall: list[float]) -> None:
    """Records the longest time the loop took to run a 5 ms timer late."""
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(0.005)
        stall[0] = max(stall[0], loop.time() - before - 0.005)


def _legacy_payload(info: dict[str, Any]) -> str:
    from Cryptodome.Cipher import AES

    plain = json.dumps(info).encode()
    plain += b" " * (-len(plain) % 16)
    cipher = AES.new(info["kernel_id"][:16].encode(), AES.MODE_ECB)
    return base64.b64encode(cipher.encrypt(plain)).decode()


async def main() -> None:
    repo, launchers_dir = sys.argv[1], sys.argv[2]
    stock = "--stock" in sys.argv[3:]
    sys.path[:0] = [repo, launchers_dir]
    from enterprise_gateway.services.processproxies import processproxy
    from server_listener import ServerListener

    if not stock:
        from sandbox_gateway import response

        response.apply()
    manager = processproxy.ResponseManager.instance()
    warnings = _Warnings()
    manager.log.addHandler(warnings)
    manager.log.setLevel(logging.INFO)
    stall = [0.0]
    watcher = asyncio.get_running_loop().create_task(_watch_lag(stall))
    await asyncio.sleep(0.05)  # let the server task start listening
    print(json.dumps({"address": manager.response_address, "public_key": manager.public_key}))
    sys.stdout.flush()

    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        request = json.loads(line)
        op = request["op"]
        reply: dict[str, Any] = {}
        if op == "register":
            manager.register_event(request["kernel_id"])
        elif op == "payload":
            info = request["info"]
            if request["version"] == 0:
                reply["payload"] = _legacy_payload(info)
            else:
                listener = ServerListener.__new__(ServerListener)
                listener.public_key = manager.public_key.encode()
                reply["payload"] = listener._encrypt(json.dumps(info).encode()).decode()
        elif op == "wait":
            kernel_id, peer = request["kernel_id"], request.get("peer")
            started = time.monotonic()
            deadline = started + request["timeout"]
            while time.monotonic() < deadline:
                try:
                    if stock:
                        reply["info"] = await manager.get_connection_info(kernel_id)
                    else:
                        reply["info"] = await manager.get_connection_info(kernel_id, peer)
                    break
                except asyncio.TimeoutError:
                    await asyncio.sleep(0.005)  # EG's launch loop sleeps between polls too
            reply["elapsed"] = time.monotonic() - started
        elif op == "state":
            reply["registered"] = sorted(manager._response_registry)
            reply["open"] = getattr(manager, "_open_total", None)
            reply["held"] = getattr(manager, "_held_total", None)
            reply["held_bytes"] = sum(
                len(answer if isinstance(answer, bytes) else json.dumps(answer))
                for candidates in manager._response_registry.values()
                for answer in getattr(candidates, "answers", {}).values()
            )
            reply["warnings"] = warnings.lines[:]
            reply["handled"] = warnings.handled
            reply["stall"] = stall[0]
            stall[0] = 0.0
        else:
            reply["error"] = f"unknown op {op!r}"
        print(json.dumps(reply))
        sys.stdout.flush()
    watcher.cancel()
    manager.stop_response_manager()


if __name__ == "__main__":
    asyncio.run(main())
