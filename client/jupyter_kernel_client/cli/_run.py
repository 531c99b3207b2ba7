"""``mini-sandbox run``: a file or ``-c CODE`` in a fresh kernel, its output streamed live."""

from __future__ import annotations

import base64
import binascii
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ._app import App, pass_app
from ._errors import CliError, Exit, reporting, usage
from ._options import assignments, env_option, kernel_option, timeout_option
from ._output import write_stream

if TYPE_CHECKING:
    from .._result import OutputEvent
    from .._session import GatewayKernelSession


@click.command(short_help="Run a Python file or -c CODE in a fresh kernel.")
@click.argument(
    "file", required=False, type=click.Path(exists=True, dir_okay=False, allow_dash=True)
)
@click.option("-c", "code", metavar="CODE", help="The code to run (instead of FILE).")
@kernel_option
@env_option
@timeout_option("the code")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Save the images (PNG) the code displays in DIR.",
)
@pass_app
def run(
    app: App,
    file: str | None,
    code: str | None,
    kernel_name: str,
    env: tuple[str, ...],
    timeout: float,
    out: Path | None,
) -> None:
    """Run FILE (- reads stdin) or -c CODE in a fresh kernel, then shut it down.

    The kernel's stdout and stderr reach ours as they are printed; the value of the last
    expression is printed at the end, an exception's traceback goes to stderr (exit 1).

    \b
    Examples:
      mini-sandbox run -c 'import sys; print(sys.version)'
      mini-sandbox run analysis.py --env DATASET=small --timeout 120
      echo 'print(2 + 2)' | mini-sandbox run -
      mini-sandbox run plot.py --out plots/
    """
    source = _source(file, code)
    variables = assignments(env)
    printer = _Printer(out)
    try:
        with reporting(app.gateway), app.session(kernel_name, detach_shutdown=True) as session:
            if variables:
                _set_environment(session, variables)
            try:
                result = session.execute(source, timeout=timeout, on_output=printer)
            except TimeoutError as exc:
                raise CliError(
                    f"the code did not finish within {timeout:g} s (the kernel was interrupted)",
                    Exit.TIMEOUT,
                ) from exc
    except KeyboardInterrupt:
        raise CliError("interrupted; the kernel was shut down", Exit.INTERRUPTED) from None
    printer.report_unsaved()
    if result.error is not None:
        write_stream("stderr", result.error.plain_traceback() + "\n")
        sys.exit(Exit.CODE)
    if not result.ok:
        raise CliError(f"the kernel answered {result.status}", Exit.CODE)


def _source(file: str | None, code: str | None) -> str:
    if (file is None) == (code is None):
        raise usage("give FILE or -c CODE (one of them)")
    if code is not None:
        return code
    assert file is not None
    if file == "-":
        return sys.stdin.read()
    try:
        return Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise usage(f"cannot read {file}: {exc}") from exc


def environment_code(variables: dict[str, str]) -> str:
    """Python that sets ``variables`` in the kernel's ``os.environ``, leaving no name behind.

    The values travel as a JSON document inside a ``repr`` literal: data, never code.
    """
    document = json.dumps(variables)
    return f"__import__('os').environ.update(__import__('json').loads({document!r}))"


def _set_environment(session: GatewayKernelSession, variables: dict[str, str]) -> None:
    # In the kernel, not in the start request: the gateway passes only KERNEL_* variables on,
    # and a start that customises the kernel cannot be served from the warm pool.
    language = session.kernel_info.get("language_info", {}).get("name")
    if language not in (None, "python"):
        raise usage(f"--env needs a Python kernel; {session.kernel_name!r} runs {language!r}")
    result = session.execute(environment_code(variables), timeout=30)
    if result.error is not None:
        raise CliError(f"could not set --env in the kernel: {result.error.evalue}", Exit.CODE)


class _Printer:
    """The ``on_output`` of ``run``: streams pass through, images are saved, values printed."""

    def __init__(self, out: Path | None) -> None:
        self.out = out
        self.saved = 0
        self.unsaved = 0

    def __call__(self, event: OutputEvent) -> None:
        if event.kind in ("stdout", "stderr"):
            write_stream(event.kind, event.text)
        elif event.kind in ("display", "result"):
            png = event.data.get("image/png")
            if isinstance(png, str):
                self._save(png)
                return
            plain = event.data.get("text/plain")
            if plain is not None:
                write_stream("stdout", f"{plain}\n")

    def _save(self, encoded: str) -> None:
        if self.out is None:
            self.unsaved += 1
            return
        try:
            data = base64.b64decode(encoded)
        except (binascii.Error, ValueError):
            write_stream("stderr", "mini-sandbox: the kernel sent an image that is not base64\n")
            return
        self.saved += 1
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            path = self.out / f"image-{self.saved}.png"
            path.write_bytes(data)
        except OSError as exc:
            write_stream("stderr", f"mini-sandbox: cannot save an image: {exc}\n")
            return
        write_stream("stderr", f"mini-sandbox: saved image {path}\n")

    def report_unsaved(self) -> None:
        if self.unsaved:
            write_stream(
                "stderr",
                f"mini-sandbox: {self.unsaved} image(s) not saved: pass --out DIR to keep them\n",
            )
