"""``mini-sandbox``: the sandbox from a shell (the ``cli`` extra, on click).

One module per command group (``_run``, ``_sh``, ``_repl``, ``_sessions``, ``_files``,
``_status``); where settings come from is ``_config``, exit codes ``_errors``, printing
``_output``.  Only click and the standard library are imported at start-up: the session
modules, ``requests`` and ``tqdm`` load inside the commands that use them.
"""

from __future__ import annotations

from pathlib import Path

import click

from . import _config
from ._app import App
from ._errors import EPILOG
from ._files import files
from ._repl import repl
from ._run import run
from ._sessions import sessions
from ._sh import sh
from ._status import status

__all__ = ["cli", "main"]

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT, epilog=EPILOG)
@click.option("--gateway", metavar="URL", help="Gateway HTTP URL [$GATEWAY_HTTP].")
@click.option("--gateway-ws", metavar="URL", help="Gateway websocket URL [$GATEWAY_WS].")
@click.option("--token", metavar="TOKEN", help="Gateway token [$JUPYTER_GATEWAY_AUTH_TOKEN].")
@click.option("--file-server", metavar="URL", help="File server URL [$FILE_SERVER_URL].")
@click.option(
    "--file-server-token", metavar="TOKEN", help="File server token [$FILE_SERVER_TOKEN]."
)
@click.option("--notebook", metavar="URL", help="Notebook URL [$NOTEBOOK_URL].")
@click.option(
    "--env-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The stack's .env to read [default: the first .env from here upwards].",
)
@click.version_option(package_name="mini-jupyter-sandbox", prog_name="mini-sandbox")
@click.pass_context
def cli(
    ctx: click.Context,
    gateway: str | None,
    gateway_ws: str | None,
    token: str | None,
    file_server: str | None,
    file_server_token: str | None,
    notebook: str | None,
    env_file: Path | None,
) -> None:
    """Run code, shell commands and a REPL in sandboxed Jupyter kernels.

    Settings come from the options below, then the environment, then the stack's .env, then
    the defaults of the local stack (gateway http://127.0.0.1:8889, file server
    http://127.0.0.1:8080, notebook http://127.0.0.1:8888).

    \b
    Examples:
      mini-sandbox run -c 'print(6 * 7)'
      mini-sandbox sh -- uname -a
      mini-sandbox repl
      mini-sandbox files put data.csv project/
      mini-sandbox status --json
    """
    flags = _config.Flags(gateway, gateway_ws, token, file_server, file_server_token, notebook)
    ctx.obj = App(flags, env_file)


for _command in (run, sh, repl, sessions, files, status):
    _command.epilog = EPILOG  # the exit codes, on every command's --help
    cli.add_command(_command)


def main() -> None:
    """The console script."""
    cli(prog_name="mini-sandbox")
