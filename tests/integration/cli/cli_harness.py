"""Running ``mini-sandbox`` as a subprocess, with none of the developer's settings."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[3]
CLI = [sys.executable, "-m", "jupyter_kernel_client.cli"]
# Everything the command line reads, so that the developer's own settings never leak in.
SETTINGS = (
    "GATEWAY_HTTP",
    "GATEWAY_WS",
    "JUPYTER_GATEWAY_AUTH_TOKEN",
    "FILE_SERVER_URL",
    "FILE_SERVER_TOKEN",
    "NOTEBOOK_URL",
    "SANDBOX_BIND_ADDRESS",
    "GATEWAY_PORT",
    "FILE_SERVER_PORT",
    "NOTEBOOK_PORT",
    "XDG_STATE_HOME",
)


def interruptible() -> None:
    """In the child, before it runs: Ctrl-C (SIGINT) as a terminal delivers it.  A test run
    started in the background of a non-interactive shell inherits SIGINT ignored, and Python
    then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def base_env(state: Path, **settings: str) -> dict[str, str]:
    """The test process's environment without any of the CLI's settings, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    paths = [str(REPO / "client"), str(REPO), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    env["XDG_STATE_HOME"] = str(state)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings)
    return env


@dataclass
class Cli:
    """Runs ``mini-sandbox`` in ``cwd`` (a directory with no .env above it) with ``env``."""

    cwd: Path
    env: dict[str, str]

    def __call__(
        self,
        *args: str,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args],
            cwd=self.cwd,
            env={**self.env, **(env or {})},
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*CLI, *args],
            preexec_fn=interruptible,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def read_line(stream: IO[str], timeout: float) -> str:
    """The next line of a pipe, or ``AssertionError`` if none came within ``timeout``."""
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"no line within {timeout} s") from None
