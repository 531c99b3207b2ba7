"""Fixtures: a real file server (uvicorn subprocess) over a temporary shared directory.

Layout of ``fs_dirs``::

    base/
      shared/           the server's root (SHARED_DATA_DIR)
      outside/
        sentinel.txt    must never be read, written or deleted through the server
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.fileserver.fileserver_harness import (
    SENTINEL_CONTENT,
    FileServer,
    FsDirs,
    start_uvicorn,
)


@pytest.fixture(scope="session")
def fs_dirs(tmp_path_factory: pytest.TempPathFactory) -> FsDirs:
    base = tmp_path_factory.mktemp("fileserver")
    root = base / "shared"
    outside = base / "outside"
    root.mkdir()
    outside.mkdir()
    sentinel = outside / "sentinel.txt"
    sentinel.write_bytes(SENTINEL_CONTENT)
    return FsDirs(base, root, outside, sentinel)


@pytest.fixture(scope="session")
def file_server(fs_dirs: FsDirs) -> Iterator[FileServer]:
    """The server every API test shares; upload limit 1 MiB."""
    server = start_uvicorn(fs_dirs.root, fs_dirs.base / "server.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def workdir(file_server: FileServer) -> tuple[str, Path]:
    """A fresh directory below the root for one test: (relative name, absolute path)."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    path = file_server.root / name
    path.mkdir()
    return name, path
