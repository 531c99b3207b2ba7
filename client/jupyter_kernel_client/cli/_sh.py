"""``mini-sandbox sh``: a shell command in a kernel's container, with its exit code."""

from __future__ import annotations

import sys

import click

from ._app import App, pass_app
from ._errors import CliError, Exit, reporting, usage
from ._options import assignments, env_option, timeout_option
from ._output import write_stream


def exit_status(exit_code: int) -> int:
    """The command's exit code as a shell reports it: killed by signal N is 128 + N."""
    return 128 - exit_code if exit_code < 0 else exit_code


@click.command(
    short_help="Run a shell command in a kernel's container.",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option(
    "--session",
    "kernel_id",
    metavar="ID",
    help="Run in this running kernel (left running) instead of a fresh one.",
)
@timeout_option("the command")
@click.option("--cwd", metavar="DIR", help="Working directory in the kernel's container.")
@env_option
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_app
def sh(
    app: App,
    kernel_id: str | None,
    timeout: float,
    cwd: str | None,
    env: tuple[str, ...],
    cmd: tuple[str, ...],
) -> None:
    """Run CMD in a fresh kernel's container (or in --session ID) and exit with its code.

    One CMD argument is a shell string, run by /bin/sh -c; several are an argv, run as they
    are without a shell.  stdout and stderr stream live to ours.  A command killed by signal
    N exits 128 + N.

    \b
    Examples:
      mini-sandbox sh -- 'ls -l /data/shared | head'
      mini-sandbox sh -- python -c 'import sys; print(sys.argv)' 'a b' '$HOME'
      mini-sandbox sh --session 0f3c... --cwd /data/shared -- du -sh .
    """
    argv = list(cmd)
    if argv and argv[0] == "--":
        argv = argv[1:]  # `sh --timeout 5 -- CMD`: click keeps the separator after an option
    if not argv:
        raise usage("give a command: mini-sandbox sh -- CMD ...")
    command: str | list[str] = argv[0] if len(argv) == 1 else argv
    variables = assignments(env)
    from .._exceptions import CommandError, CommandTimeoutError

    with reporting(app.gateway), app.session(kernel_id=kernel_id, detach_shutdown=True) as session:
        try:
            result = session.run_command(
                command, timeout=timeout, cwd=cwd, env=variables, on_output=write_stream
            )
        except CommandTimeoutError as exc:
            raise CliError(
                f"the command did not finish within {timeout:g} s; it was killed", Exit.TIMEOUT
            ) from exc
        except CommandError as exc:
            raise CliError(str(exc), Exit.CODE) from exc
        except KeyboardInterrupt:
            # A kernel we leave running must not keep the command: the interrupt kills its
            # process group.  A fresh kernel is shut down anyway.
            if kernel_id is not None:
                session.interrupt()
            raise CliError("interrupted", Exit.INTERRUPTED) from None
    if result.truncated:
        write_stream("stderr", "mini-sandbox: the command's output was truncated\n")
    sys.exit(exit_status(result.exit_code))
