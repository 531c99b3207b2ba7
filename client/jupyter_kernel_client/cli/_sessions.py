"""``mini-sandbox sessions``: your kernels on the gateway, through the public protocol flows."""

from __future__ import annotations

from typing import Any

import click

from ._app import App, no_such_session, pass_app
from ._errors import reporting
from ._options import kernel_option
from ._output import print_json, table
from ._repl import interact, repl_timeout_option

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")

COLUMNS = (
    ("id", "ID"),
    ("name", "KERNEL"),
    ("execution_state", "STATE"),
    ("connections", "CONNECTIONS"),
    ("last_activity", "LAST ACTIVITY"),
)


@click.group(short_help="List, start, stop and attach to kernels.")
def sessions() -> None:
    """Your kernels on the gateway: list, start (left running), stop, attach.

    \b
    Examples:
      mini-sandbox sessions ls
      ID=$(mini-sandbox sessions start)
      mini-sandbox sh --session "$ID" -- pip list
      mini-sandbox sessions attach "$ID"
      mini-sandbox sessions stop "$ID"
    """


@sessions.command("ls", short_help="List your kernels.")
@json_option
@pass_app
def list_sessions(app: App, as_json: bool) -> None:
    """List your kernels (the gateway shows each tenant only its own).

    \b
    Examples:
      mini-sandbox sessions ls
      mini-sandbox sessions ls --json | jq -r '.[].id'
    """
    from .. import protocol

    with reporting(app.gateway), app.gateway_http() as (config, perform):
        models: list[dict[str, Any]] = protocol.run_flow(
            protocol.list_kernels_flow(config.gateway_http), perform
        )
    if as_json:
        print_json(models)
    elif models:
        click.echo(table(models, COLUMNS))
    else:
        click.echo("no sessions", err=True)


@sessions.command("start", short_help="Start a kernel and leave it running.")
@kernel_option
@json_option
@pass_app
def start_session(app: App, kernel_name: str, as_json: bool) -> None:
    """Start a kernel and print its id; it runs until `sessions stop` (or the gateway's
    idle culling).

    \b
    Examples:
      mini-sandbox sessions start
      mini-sandbox sessions start --kernel sandbox-python --json
    """
    from .. import protocol

    with reporting(app.gateway), app.gateway_http() as (config, perform):
        config = config.replace(kernel_name=kernel_name)
        kernel_id: str = protocol.run_flow(protocol.start_flow(config), perform)
    if as_json:
        print_json({"id": kernel_id, "name": kernel_name})
    else:
        click.echo(kernel_id)


@sessions.command("stop", short_help="Shut a kernel down.")
@click.argument("kernel_id", metavar="ID")
@pass_app
def stop_session(app: App, kernel_id: str) -> None:
    """Shut kernel ID down.  An unknown ID (or another tenant's) exits 4.

    \b
    Example:
      mini-sandbox sessions stop 0f3c2a5e-...
    """
    from .. import protocol

    with reporting(app.gateway), app.gateway_http() as (config, perform):
        model = protocol.run_flow(
            protocol.kernel_model_flow(config.gateway_http, kernel_id), perform
        )
        if model is None:
            raise no_such_session(kernel_id)
        ref = protocol.KernelRef(config.gateway_http, config.gateway_ws, kernel_id, "")
        protocol.run_flow(protocol.shutdown_flow(ref), perform)
    click.echo(f"stopped {kernel_id}", err=True)


@sessions.command("attach", short_help="A REPL in a running kernel (= repl --session ID).")
@click.argument("kernel_id", metavar="ID")
@repl_timeout_option
@pass_app
def attach_session(app: App, kernel_id: str, timeout: float) -> None:
    """An interactive prompt in the running kernel ID; leaving it leaves the kernel running.

    \b
    Example:
      mini-sandbox sessions attach 0f3c2a5e-...
    """
    interact(app, kernel_id=kernel_id, kernel_name="python3", timeout=timeout)
