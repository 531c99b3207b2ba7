"""The gateway fixes, checked inside Enterprise Gateway 3.3's own environment."""

from __future__ import annotations

import subprocess

from tests.support.gateway import GATEWAY_CONFIG, gateway_venv

PROBE = """
import sys
sys.path.insert(0, {patches_dir!r})
import sandbox_gateway_patches
from enterprise_gateway.services.processproxies.processproxy import ResponseManager

manager = ResponseManager.instance()
manager._prepare_response_socket()
stock_timeout = manager._response_socket.gettimeout()
sandbox_gateway_patches.apply()
ResponseManager.clear_instance()
patched = ResponseManager.instance()
patched._prepare_response_socket()
print(stock_timeout, patched._response_socket.getblocking(), patched._response_socket.gettimeout())
"""


def test_response_socket_never_blocks_the_event_loop() -> None:
    # Stock EG gives the socket a 5 ms timeout and accept()s it on the event loop every 0.1 ms.
    python = gateway_venv() / "bin" / "python"
    probe = PROBE.format(patches_dir=str(GATEWAY_CONFIG.parent))
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    stock_timeout, blocking, timeout = done.stdout.split()
    assert float(stock_timeout) > 0  # the defect the patch exists for is still upstream
    assert blocking == "False" and float(timeout) == 0.0
