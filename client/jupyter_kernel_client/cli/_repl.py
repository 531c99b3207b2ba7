"""``mini-sandbox repl``: an interactive prompt against a remote kernel.

Python's own REPL conventions: ``>>>`` and ``...`` prompts, completeness decided by
:func:`codeop.compile_command` (a blank line ends an indented block), readline history kept in
``$XDG_STATE_HOME/mini-sandbox/history`` (``~/.local/state/mini-sandbox/history``).  Ctrl-C at
the prompt clears the input; while code runs, a SIGINT handler asks a helper thread to
interrupt the kernel, so that the running ``execute`` goes on reading and shows the kernel's
``KeyboardInterrupt``.  Ctrl-D leaves, shutting the kernel down only if the REPL started it.
"""

from __future__ import annotations

import codeop
import contextlib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Final, TypeVar

import click

from ._app import App, pass_app
from ._errors import CliError, Exit, reporting
from ._options import kernel_option
from ._output import write_stream

if TYPE_CHECKING:
    from .._result import OutputEvent
    from .._session import GatewayKernelSession

F = TypeVar("F", bound=Callable[..., Any])

REPL_TIMEOUT: Final = 86400.0
HISTORY_LENGTH: Final = 10000
PS1: Final = ">>> "
PS2: Final = "... "


def repl_timeout_option(command: F) -> F:
    return click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=REPL_TIMEOUT,
        show_default=True,
        metavar="S",
        help="Seconds one input may run before the kernel is interrupted.",
    )(command)


@click.command(short_help="An interactive prompt in a kernel.")
@click.option(
    "--session",
    "kernel_id",
    metavar="ID",
    help="Attach to this running kernel (left running when you leave).",
)
@kernel_option
@repl_timeout_option
@pass_app
def repl(app: App, kernel_id: str | None, kernel_name: str, timeout: float) -> None:
    """An interactive prompt in a fresh kernel (shut down when you leave) or in --session ID.

    Ctrl-C clears the input, or interrupts the running code; Ctrl-D leaves.

    \b
    Examples:
      mini-sandbox repl
      mini-sandbox repl --session 0f3c2a5e-...
    """
    interact(app, kernel_id=kernel_id, kernel_name=kernel_name, timeout=timeout)


def interact(app: App, *, kernel_id: str | None, kernel_name: str, timeout: float) -> None:
    with reporting(app.gateway), app.session(kernel_name, kernel_id) as session:
        Repl(session, timeout).loop(owned=kernel_id is None)


def history_path(environ: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    state = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "mini-sandbox" / "history"


def is_complete(source: str) -> bool:
    """Whether Python would run ``source`` now rather than ask for another line."""
    lines = source.split("\n")
    if len(lines) > 1 and not lines[-1].strip():
        return True  # a blank line ends an indented block
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SyntaxWarnings are the kernel's to report
        try:
            return codeop.compile_command(source, "<stdin>", "single") is not None
        except (SyntaxError, ValueError, OverflowError):
            return True  # the kernel reports the error


class Repl:
    def __init__(self, session: GatewayKernelSession, timeout: float) -> None:
        self.session = session
        self.timeout = timeout
        info = session.kernel_info.get("language_info", {})
        self.language = str(info.get("name", "python"))
        self.version = str(info.get("version", ""))
        self.interactive = sys.stdin.isatty()

    def loop(self, *, owned: bool) -> None:
        leaving = "shuts it down" if owned else "leaves it running"
        click.echo(
            f"kernel {self.session.kernel_id} ({self.session.kernel_name}, "
            f"{self.language} {self.version}); Ctrl-D {leaving}",
            err=True,
        )
        with _history():
            while True:
                try:
                    source = self._read()
                except EOFError:
                    if self.interactive:
                        write_stream("stdout", "\n")
                    return
                except KeyboardInterrupt:
                    write_stream("stdout", "\nKeyboardInterrupt\n")
                    continue
                if source.strip():
                    self._execute(source)

    def _read(self) -> str:
        lines: list[str] = []
        while True:
            prompt = (PS2 if lines else PS1) if self.interactive else ""
            lines.append(input(prompt))
            source = "\n".join(lines)
            if self.language != "python" or is_complete(source):
                return source

    def _execute(self, source: str) -> None:
        from .._exceptions import ConnectionLostError, ExecutionTimeoutError, KernelDiedError

        with self._interrupting():
            try:
                result = self.session.execute(source, timeout=self.timeout, on_output=_show)
            except ExecutionTimeoutError:
                write_stream("stderr", f"mini-sandbox: interrupted after {self.timeout:g} s\n")
                return
            except ConnectionLostError as exc:
                write_stream("stderr", f"mini-sandbox: {exc}\n")
                return
            except KernelDiedError as exc:
                raise CliError(f"the kernel died: {exc}", Exit.CODE) from exc
        if result.error is not None:
            write_stream("stderr", result.error.plain_traceback() + "\n")

    @contextlib.contextmanager
    def _interrupting(self) -> Iterator[None]:
        """While code runs, Ctrl-C interrupts the kernel instead of this process."""

        def interrupt() -> None:
            from .._exceptions import KernelClientError

            try:
                self.session.interrupt()
            except KernelClientError as exc:
                write_stream("stderr", f"mini-sandbox: could not interrupt the kernel: {exc}\n")

        def on_sigint(signum: int, frame: FrameType | None) -> None:
            # Not in the handler itself: it runs between two bytecodes of the execute it
            # interrupts, which must keep reading the kernel's answer.
            threading.Thread(target=interrupt, name="repl-interrupt", daemon=True).start()

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


def _show(event: OutputEvent) -> None:
    if event.kind in ("stdout", "stderr"):
        write_stream(event.kind, event.text)
    elif event.kind in ("display", "result"):
        plain = event.data.get("text/plain")
        if plain is not None:
            write_stream("stdout", f"{plain}\n")


@contextlib.contextmanager
def _history() -> Iterator[None]:
    """readline's history, loaded from and saved to :func:`history_path` (private: 0600)."""
    try:
        import readline
    except ImportError:  # no readline (Windows): a prompt without history
        yield
        return
    path = history_path()
    with contextlib.suppress(OSError):
        readline.read_history_file(path)
    readline.set_history_length(HISTORY_LENGTH)
    try:
        yield
    finally:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            readline.write_history_file(path)
        except OSError as exc:
            write_stream("stderr", f"mini-sandbox: history not saved: {exc}\n")
