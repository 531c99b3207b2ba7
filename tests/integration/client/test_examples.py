"""The examples run as users run them, against the test gateway."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.gateway import Gateway

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def run_example(name: str, gateway: Gateway, **env: str) -> str:
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        env={**os.environ, "GATEWAY_HTTP": gateway.http, "GATEWAY_WS": gateway.ws, **env},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def test_basic_usage(gateway: Gateway, tmp_path: Path) -> None:
    out = run_example("basic_usage.py", gateway, SHARED_DIR=str(tmp_path))
    lines = out.splitlines()
    assert lines[0] == "4"
    assert "Hello from the kernel!" in lines
    assert "status: error - ZeroDivisionError" in lines
    assert any(line.startswith("streamed:") and "tick 2" in line for line in lines)
    assert any(line.startswith("timed out:") for line in lines)
    assert "after the timeout: 'still alive'" in lines
    assert "pooled kernel says: 42" in lines
    assert (tmp_path / "my_output.txt").read_text() == "Hello from the kernel!"


def test_async_example(gateway: Gateway) -> None:
    out = run_example("async_example.py", gateway)
    assert out.splitlines() == ["Hello, async world!", "squares: 1, 4, 9"]
