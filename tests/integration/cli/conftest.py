"""Fixtures of the command line's tests: ``mini-sandbox`` as a subprocess against the real gateway
(``gateway`` fixture) and a real file server under uvicorn."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.gateway import Gateway
from tests.integration.cli.cli_harness import Cli, base_env
from tests.integration.fileserver.fileserver_harness import FileServer, start_uvicorn


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    assert not any((d / ".env").exists() for d in (work, *work.parents))
    return work


@pytest.fixture
def cli(gateway: Gateway, workdir: Path, tmp_path: Path) -> Iterator[Cli]:
    """The command line pointed at the session's gateway (and no file server).

    A kernel a test's CLI left running (the test failed before it stopped it) is shut down
    afterwards: the gateway is shared, and later tests count its kernels."""
    before = {k["id"] for k in gateway.kernels()}
    yield Cli(workdir, base_env(tmp_path / "state", GATEWAY_HTTP=gateway.http))
    for kernel in gateway.kernels():
        if kernel["id"] not in before:
            gateway.shutdown_kernel(str(kernel["id"]))


@pytest.fixture(scope="module")
def file_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServer]:
    base = tmp_path_factory.mktemp("cli-files")
    (base / "shared").mkdir()
    server = start_uvicorn(base / "shared", base / "server.log", max_upload_bytes=4 * 1024 * 1024)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def files_cli(cli: Cli, file_server: FileServer) -> Cli:
    env = {
        **cli.env,
        "FILE_SERVER_URL": file_server.base_url,
        "FILE_SERVER_TOKEN": file_server.token,
    }
    return Cli(cli.cwd, env)
