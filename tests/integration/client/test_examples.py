"""The examples run as users run them, against the test gateway."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from testkit.gateway import Gateway, free_port
from tests.integration.fileserver.fileserver_harness import start_uvicorn

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


def test_metrics_example(gateway: Gateway) -> None:
    out = run_example("metrics_example.py", gateway, METRICS_PORT=str(free_port()))
    lines = out.splitlines()
    assert lines[0] == "Hello, Prometheus!"
    assert 'jupyter_kernel_executions_total{kernel_name="python3",status="ok"} 6.0' in lines
    assert 'jupyter_kernel_executions_total{kernel_name="python3",status="error"} 1.0' in lines
    assert 'jupyter_kernel_active_sessions{kernel_name="python3"} 0.0' in lines


def test_auth_example(gateway: Gateway, tmp_path: Path) -> None:
    root = tmp_path / "shared"
    root.mkdir()
    server = start_uvicorn(root, tmp_path / "server.log")
    try:
        out = run_example(
            "auth_example.py",
            gateway,
            FILE_SERVER_URL=server.base_url,
            FILE_SERVER_TOKEN=server.token,
            SHARED_DIR=str(root),
        )
    finally:
        server.stop()
    assert out.splitlines() == [
        "kernel wrote: Hello from authenticated kernel!",
        "kernel reads upload: 'uploaded from the client'",
        "downloaded: kernel_output.csv 3,9",
        "shared files: ['kernel_output.csv', 'local_file.txt', 'test.txt']",
    ]
    assert (root / "local_file.txt").read_text() == "uploaded from the client\n"
