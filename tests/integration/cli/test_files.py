"""``mini-sandbox files`` against the real file server: put, ls, get, rm, a missing file."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.integration.cli.cli_harness import Cli
from tests.integration.fileserver.fileserver_harness import FileServer

BLOB = os.urandom(300_000) + bytes(range(256))


def test_put_ls_get_rm_round_trip(files_cli: Cli, file_server: FileServer, workdir: Path) -> None:
    (workdir / "blob.bin").write_bytes(BLOB)
    put = files_cli("files", "put", "blob.bin", "cli/")
    assert put.returncode == 0, put.stderr
    assert put.stdout == "/data/shared/cli/blob.bin\n"  # where a kernel sees it
    assert (file_server.root / "cli" / "blob.bin").read_bytes() == BLOB
    assert put.stderr == "", "no progress bar on a stderr that is not a terminal"

    listing = files_cli("files", "ls", "cli", "--json")
    assert listing.returncode == 0
    entries = json.loads(listing.stdout)
    assert [(e["name"], e["path"], e["size"], e["is_dir"]) for e in entries] == [
        ("blob.bin", "cli/blob.bin", len(BLOB), False)
    ]
    root = json.loads(files_cli("files", "ls", "--json").stdout)
    assert {"name": "cli", "is_dir": True}.items() <= next(
        e for e in root if e["name"] == "cli"
    ).items()
    table = files_cli("files", "ls").stdout.splitlines()
    assert table[0].split() == ["NAME", "SIZE", "MODIFIED"]
    assert any(line.startswith("cli/ ") for line in table[1:])

    got = files_cli("files", "get", "cli/blob.bin", "copy.bin")
    assert got.returncode == 0, got.stderr
    assert (workdir / "copy.bin").read_bytes() == BLOB
    (workdir / "into").mkdir()
    assert files_cli("files", "get", "cli/blob.bin", "into").returncode == 0
    assert (workdir / "into" / "blob.bin").read_bytes() == BLOB

    assert files_cli("files", "rm", "cli/blob.bin").returncode == 0
    assert not (file_server.root / "cli" / "blob.bin").exists()
    assert json.loads(files_cli("files", "ls", "cli", "--json").stdout) == []


def test_listing_reads_every_page(files_cli: Cli, file_server: FileServer) -> None:
    folder = file_server.root / "many"
    folder.mkdir()
    names = [f"f{i:04d}.txt" for i in range(1205)]  # more than one page of 1000
    for name in names:
        (folder / name).write_text("x")
    entries = json.loads(files_cli("files", "ls", "many", "--json").stdout)
    assert [e["name"] for e in entries] == names


def test_a_missing_remote_file_exits_4_and_writes_nothing(files_cli: Cli, workdir: Path) -> None:
    for args in (("get", "no/such.bin", "out.bin"), ("rm", "no/such.bin"), ("ls", "no/such")):
        done = files_cli("files", *args)
        assert done.returncode == 4, done.stderr
        assert len(done.stderr.splitlines()) == 1 and "404" in done.stderr
    assert not (workdir / "out.bin").exists()


def test_paths_that_leave_the_volume_are_refused_locally(files_cli: Cli, workdir: Path) -> None:
    (workdir / "a.txt").write_text("a")
    for args in (("put", "a.txt", "../escape.txt"), ("get", "../etc/passwd"), ("rm", "/etc")):
        done = files_cli("files", *args)
        assert done.returncode == 2, (args, done.stderr)
