"""``mini-sandbox files``: the shared volume through the file server's HTTP API.

Transfers reuse the client's own (``jupyter_kernel_client._files``: streamed, atomic
downloads, the same errors); a progress bar is drawn only on a terminal's stderr.
"""

from __future__ import annotations

import importlib.util
import posixpath
import sys
from pathlib import Path
from typing import Any, Final

import click

from ._app import App, pass_app
from ._errors import CliError, Exit, reporting, usage
from ._output import human_size, print_json, table

PAGE: Final = 1000
COLUMNS = (("name", "NAME"), ("size", "SIZE"), ("modified", "MODIFIED"))


@click.group(short_help="List, upload, download and delete shared files.")
def files() -> None:
    """The shared volume, which every kernel sees under /data/shared.

    \b
    Examples:
      mini-sandbox files put data.csv project/
      mini-sandbox files ls project
      mini-sandbox files get project/result.csv .
      mini-sandbox files rm project/data.csv
    """


def _progress() -> bool:
    return sys.stderr.isatty() and importlib.util.find_spec("tqdm") is not None


def _remote(path: str) -> str:
    from .._fileops import confine

    try:
        return confine(path)
    except ValueError as exc:
        raise usage(str(exc)) from exc


@files.command("ls", short_help="List a directory of the shared volume.")
@click.argument("directory", metavar="[DIR]", default="")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@pass_app
def list_files(app: App, directory: str, as_json: bool) -> None:
    """List DIR of the shared volume (its root by default), every page of it.

    \b
    Examples:
      mini-sandbox files ls
      mini-sandbox files ls project --json
    """
    from .. import _files as transfer

    remote = _remote(directory) if directory.strip("/") else ""
    entries: list[dict[str, Any]] = []
    with reporting(app.file_server), app.file_server_http() as (config, http):
        params: dict[str, str | int] = {"path": remote, "limit": PAGE}
        url = f"{config.url}/files"
        while True:
            response = transfer._request(http, config, "GET", url, remote or "/", params=params)
            with response:
                try:
                    page = response.json()
                except ValueError as exc:
                    raise CliError(f"{url} did not answer JSON", Exit.CONNECT) from exc
                cursor = response.headers.get("X-Next-Cursor")
            if not isinstance(page, list):
                raise CliError(f"{url} did not answer a list", Exit.CONNECT)
            entries += [entry for entry in page if isinstance(entry, dict)]
            if not cursor:
                break
            params = {**params, "cursor": cursor}
    if as_json:
        print_json(entries)
        return
    rows = [
        {
            **entry,
            "name": entry.get("name", "") + ("/" if entry.get("is_dir") else ""),
            "size": "" if entry.get("is_dir") else human_size(int(entry.get("size", 0))),
        }
        for entry in entries
    ]
    if rows:
        click.echo(table(rows, COLUMNS))


@files.command("put", short_help="Upload a file.")
@click.argument("local", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("remote", required=False)
@pass_app
def put_file(app: App, local: Path, remote: str | None) -> None:
    """Upload LOCAL to REMOTE (default: its name at the root; a REMOTE ending in / is a
    directory).  Prints where a kernel sees the file.

    \b
    Examples:
      mini-sandbox files put data.csv
      mini-sandbox files put data.csv project/
      mini-sandbox files put data.csv project/input.csv
    """
    from .. import _files as transfer

    target = local.name if remote is None else remote
    if target.endswith("/") or target == "":
        target = posixpath.join(target, local.name)
    with reporting(app.file_server), app.file_server_http() as (config, http):
        try:
            plan = transfer.Upload.plan(config, local, target)
        except ValueError as exc:
            raise usage(str(exc)) from exc
        kernel_path = transfer.upload(http, config, plan, None, _progress())
    click.echo(kernel_path)


@files.command("get", short_help="Download a file.")
@click.argument("remote")
@click.argument("local", required=False, type=click.Path(path_type=Path))
@pass_app
def get_file(app: App, remote: str, local: Path | None) -> None:
    """Download REMOTE to LOCAL (default: its name here; an existing directory keeps the
    name).  Written atomically: an interrupted download leaves no partial file.

    \b
    Examples:
      mini-sandbox files get project/result.csv
      mini-sandbox files get project/result.csv out/
    """
    from .. import _files as transfer

    with reporting(app.file_server), app.file_server_http() as (config, http):
        try:
            plan = transfer.Download.plan(config, remote, local)
        except ValueError as exc:
            raise usage(str(exc)) from exc
        if not plan.target.parent.is_dir():
            raise usage(f"no such local directory: {plan.target.parent}")
        path = transfer.download(http, config, plan, None, _progress())
    click.echo(str(path))


@files.command("rm", short_help="Delete a file or an empty directory.")
@click.argument("path")
@pass_app
def remove_file(app: App, path: str) -> None:
    """Delete PATH (a file or an empty directory) from the shared volume.

    \b
    Example:
      mini-sandbox files rm project/data.csv
    """
    from .. import _files as transfer

    remote = _remote(path)
    if not remote:
        raise usage("give a path below the root")
    with reporting(app.file_server), app.file_server_http() as (config, http):
        url = transfer.file_url(config, remote)
        transfer._request(http, config, "DELETE", url, remote).close()
