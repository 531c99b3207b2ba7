"""``mini-sandbox repl`` driven through a pseudo-terminal, as a person at a terminal drives it:
prompts, multi-line blocks, Ctrl-C at the prompt and while code runs, Ctrl-D, history."""

from __future__ import annotations

import os
import select
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.gateway import Gateway
from tests.integration.cli.cli_harness import CLI, Cli, interruptible

# The child makes the pty its controlling terminal (it is a session leader without one, so
# opening the terminal does it), then becomes the CLI: Ctrl-C on the pty is then a SIGINT.
CONTROLLING_TTY = (
    "import os, sys; os.close(os.open(os.ttyname(0), os.O_RDWR)); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


class Terminal:
    def __init__(self, cli: Cli, *args: str) -> None:
        master, slave = os.openpty()
        self.master = master
        self.proc = subprocess.Popen(
            [CLI[0], "-c", CONTROLLING_TTY, *CLI, *args],
            cwd=cli.cwd,
            env={**cli.env, "TERM": "dumb"},
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=interruptible,
        )
        os.close(slave)
        self.seen = ""

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def expect(self, text: str, timeout: float = 60) -> str:
        """Read until ``text`` appears; return what came before it (and consume both)."""
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no {text!r} within {timeout} s; the terminal shows:\n{self.seen}"
                )
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"the repl ended before {text!r}:\n{self.seen}")
                self.seen += chunk.decode(errors="replace").replace("\r\n", "\n")
        before, _, self.seen = self.seen.partition(text)
        return before

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self.master)


@pytest.fixture
def terminal(cli: Cli) -> Iterator[Terminal]:
    term = Terminal(cli, "repl")
    try:
        term.expect(">>> ")
        yield term
    finally:
        term.close()


def test_a_session_at_the_terminal(terminal: Terminal, gateway: Gateway, tmp_path: Path) -> None:
    term = terminal
    term.send("1000 + 337\r")
    assert "1337" in term.expect(">>> ")

    # A block: `...` until a blank line ends it, as in python's own REPL.
    term.send("def double(x):\r")
    term.expect("... ")
    term.send("    return x * 2\r")
    term.expect("... ")
    term.send("\r")
    term.expect(">>> ")
    term.send("for i in range(3):\r")
    term.expect("... ")
    term.send("    print('line', double(i) + 1000)\r")
    term.expect("... ")
    term.send("\r")
    out = term.expect(">>> ")
    assert "line 1000\nline 1002\nline 1004\n" in out

    # Ctrl-C while code runs interrupts the kernel; the kernel and its state stay.
    # (It prints first, so that Ctrl-C is sent once the code runs, not while the line is read.)
    term.send(
        "import itertools; print('spin' + 'ning', flush=True); [0 for _ in itertools.count()]\r"
    )
    term.expect("spinning")
    time.sleep(0.5)
    assert term.proc.poll() is None
    term.send("\x03")
    assert "KeyboardInterrupt" in term.expect(">>> ", timeout=30)
    term.send("double(1000) + 1\r")
    assert "2001" in term.expect(">>> ")

    # Ctrl-C at the prompt clears the line: nothing of it runs.  It is pressed once readline
    # shows the line it read: a SIGINT in the instant between python's prompt and its wait
    # for the terminal is only seen at the next key, as in python's own REPL.
    term.send("undefined_name_xyz")
    term.expect("undefined_name_xyz")
    time.sleep(0.5)
    term.send("\x03")
    term.expect("KeyboardInterrupt")
    term.expect(">>> ")
    term.send("print('after', 'clear')\r")
    out = term.expect(">>> ")
    assert "after clear" in out and "NameError" not in out

    # An exception is shown and the prompt comes back.
    term.send("1 / 0\r")
    assert "ZeroDivisionError" in term.expect(">>> ")

    # Ctrl-D leaves, exit 0, shutting down the kernel this repl started.
    before = {k["id"] for k in gateway.kernels()}
    term.send("\x04")
    assert term.proc.wait(timeout=60) == 0
    assert len({k["id"] for k in gateway.kernels()}) == len(before) - 1

    history = tmp_path / "state" / "mini-sandbox" / "history"
    assert "1000 + 337" in history.read_text()
    assert stat.S_IMODE(history.stat().st_mode) == 0o600


def test_attach_leaves_the_kernel_running(cli: Cli, gateway: Gateway) -> None:
    kernel_id = cli("sessions", "start").stdout.strip()
    try:
        term = Terminal(cli, "sessions", "attach", kernel_id)
        try:
            term.expect(">>> ")
            term.send("kept = 'across' + ' attaches'\r")
            term.expect(">>> ")
            term.send("\x04")
            assert term.proc.wait(timeout=60) == 0
        finally:
            term.close()
        assert kernel_id in {k["id"] for k in gateway.kernels()}
        again = cli("repl", "--session", kernel_id, input="print(kept)\n")
        assert again.returncode == 0, again.stderr
        assert again.stdout == "across attaches\n"
    finally:
        cli("sessions", "stop", kernel_id)
