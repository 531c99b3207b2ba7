"""The cluster's daemons: each in its own session, logged to ``<dir>/<name>.log``, its pid kept in
``<dir>/pids`` so that a later process (``python -m testkit.cluster down``) can stop them too."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

# Every daemon this process started, for its exit status; kept for the life of the process (a
# daemon outlives the object that started it, and its Popen must not be collected while it runs).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class ProcessError(RuntimeError):
    """A daemon exited; the message carries its log's tail."""


class Processes:
    """Daemons started in ``directory``, stopped in the reverse order of their start."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._pids = directory / "pids"

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        _CHILDREN[proc.pid] = proc
        with open(self._pids, "a") as pids:
            pids.write(f"{proc.pid} {name}\n")

    def running(self) -> list[tuple[int, str]]:
        if not self._pids.exists():
            return []
        entries = [line.split(" ", 1) for line in self._pids.read_text().splitlines() if line]
        return [(int(pid), name) for pid, name in entries]

    def check(self) -> None:
        """Raise if a daemon started here has exited."""
        for pid, name in self.running():
            if not _alive(pid, _CHILDREN.get(pid)):
                raise ProcessError(f"{name} exited:\n{self.log(name)[-3000:]}")

    def log(self, name: str) -> str:
        path = self.directory / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, name: str | None = None, grace: float = 20) -> None:
        """Stop every daemon (or the one named), last started first: SIGTERM to its session,
        SIGKILL after ``grace`` seconds."""
        kept = []
        for pid, daemon in reversed(self.running()):
            if name is not None and daemon != name:
                kept.append((pid, daemon))
                continue
            child = _CHILDREN.pop(pid, None)
            _signal(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while _alive(pid, child) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid, child):
                _signal(pid, signal.SIGKILL)
                while _alive(pid, child):
                    time.sleep(0.05)
        if kept:
            self._pids.write_text("".join(f"{pid} {n}\n" for pid, n in reversed(kept)))
        else:
            self._pids.unlink(missing_ok=True)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _alive(pid: int, child: subprocess.Popen[bytes] | None) -> bool:
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A pid may be reused after the daemon died; a daemon of ours leads its own session.  A
    # zombie (dead, its parent gone and not reaped by PID 1) counts as stopped.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        return os.getsid(pid) == pid and state not in ("Z", "X")
    except (ProcessLookupError, FileNotFoundError):
        return False
