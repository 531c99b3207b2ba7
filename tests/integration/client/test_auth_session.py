"""AuthenticatedKernelSession: a real kernel and a real file server sharing one directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_kernel_client import (
    AuthenticatedKernelSession,
    FileOperationError,
    FileServerAuthError,
    FileTooLargeError,
    RemoteFileNotFoundError,
)
from testkit.gateway import Gateway
from tests.integration.fileserver.fileserver_harness import FileServer, start_uvicorn

ALL_BYTES = bytes(range(256)) * 64


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServer]:
    base = tmp_path_factory.mktemp("auth-shared")
    (base / "shared").mkdir()
    server = start_uvicorn(base / "shared", base / "server.log", max_upload_bytes=1024 * 1024)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def session(gateway: Gateway, shared: FileServer) -> Iterator[AuthenticatedKernelSession]:
    with AuthenticatedKernelSession(
        gateway.http,
        gateway.ws,
        "python3",
        file_server_url=shared.base_url,
        auth_token=shared.token,
        shared_dir=str(shared.root),
    ) as s:
        yield s


def test_kernel_file_ops(session: AuthenticatedKernelSession, shared: FileServer) -> None:
    text = "Hello from authenticated kernel! ' \" \\ \n ünïcode"
    assert session.execute_file_op("write", "ops/test.txt", content=text) == len(text.encode())
    assert (shared.root / "ops" / "test.txt").read_text() == text
    assert session.execute_file_op("append", "ops/test.txt", content="+more") == 5
    assert session.execute_file_op("read", "ops/test.txt") == text + "+more"
    assert session.execute_file_op("exists", "ops/test.txt") is True
    listing = session.execute_file_op("list", "ops")
    assert listing == [
        {"name": "test.txt", "size": len((text + "+more").encode()), "is_dir": False}
    ]
    assert session.execute_file_op("delete", "ops/test.txt") is None
    assert session.execute_file_op("exists", "ops/test.txt") is False
    with pytest.raises(FileOperationError, match="FileNotFoundError"):
        session.execute_file_op("read", "ops/test.txt")
    # Nothing the file ops define is left in the user's namespace.
    assert str(session.execute("'_sandbox_file_op' in globals()")) == "False"


def test_binary_content_round_trips_through_kernel_and_server(
    session: AuthenticatedKernelSession, shared: FileServer, tmp_path: Path
) -> None:
    session.execute_file_op("write", "bin/blob.dat", content=ALL_BYTES)
    assert session.execute_file_op("read", "bin/blob.dat", binary=True) == ALL_BYTES
    downloaded = session.download_from_kernel("bin/blob.dat", tmp_path / "blob.dat")
    assert downloaded.read_bytes() == ALL_BYTES


def test_upload_then_kernel_reads_it_with_progress(
    session: AuthenticatedKernelSession, tmp_path: Path
) -> None:
    local = tmp_path / "local_file.txt"
    local.write_bytes(ALL_BYTES * 4)
    seen: list[tuple[int, int | None]] = []
    remote = session.upload_to_kernel(
        local, "up/local_file.txt", progress=lambda *a: seen.append(a)
    )
    assert remote.endswith("/up/local_file.txt")
    assert seen[-1] == (local.stat().st_size, local.stat().st_size)
    code = f"open({remote!r}, 'rb').read() == bytes(range(256)) * 256"
    assert str(session.execute(code)) == "True"


def test_kernel_output_is_served_by_the_file_server(
    session: AuthenticatedKernelSession, tmp_path: Path
) -> None:
    session.execute(f"""
        import csv
        with open({session.shared_dir!r} + '/kernel_output.csv', 'w', newline='') as f:
            csv.writer(f).writerows([['a', 'b'], [1, 2]])
    """).raise_for_error()
    os.chdir(tmp_path)
    path = session.download_from_kernel("kernel_output.csv")
    assert path.resolve() == (tmp_path / "kernel_output.csv").resolve()
    assert path.read_text().splitlines() == ["a,b", "1,2"]


def test_paths_escaping_the_shared_directory_are_refused(
    session: AuthenticatedKernelSession, shared: FileServer, tmp_path: Path
) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    for bad in ("../secret.txt", "/etc/passwd", "a/../../x", "a\\..\\b", "nul\x00byte"):
        with pytest.raises(ValueError):
            session.execute_file_op("read", bad)
        with pytest.raises(ValueError):
            session.download_from_kernel(bad, tmp_path / "x")
    (shared.root / "link").symlink_to(tmp_path)  # inside the root, pointing outside
    with pytest.raises(FileOperationError, match="PermissionError"):
        session.execute_file_op("read", "link/secret.txt")
    with pytest.raises(FileOperationError, match="PermissionError"):
        session.execute_file_op("write", "link/secret.txt", content="overwritten")
    assert outside.read_text() == "secret"
    with pytest.raises(ValueError, match="unknown file operation"):
        session.execute_file_op("chmod", "x")


def test_file_server_errors_are_clear_and_leave_nothing_behind(
    session: AuthenticatedKernelSession, shared: FileServer, tmp_path: Path
) -> None:
    with pytest.raises(RemoteFileNotFoundError):
        session.download_from_kernel("missing.txt", tmp_path / "missing.txt")
    assert not (tmp_path / "missing.txt").exists()
    assert list(tmp_path.iterdir()) == []

    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (2 * 1024 * 1024))
    with pytest.raises(FileTooLargeError):
        session.upload_to_kernel(big, "too/big.bin")
    assert not (shared.root / "too" / "big.bin").exists()

    wrong = AuthenticatedKernelSession(
        session.gateway_http,
        session.gateway_ws,
        "python3",
        file_server_url=shared.base_url,
        auth_token="wrong",
    )
    with pytest.raises(FileServerAuthError) as info:
        wrong.upload_to_kernel(big, "x.bin")
    assert info.value.status_code == 401
    assert not (shared.root / "x.bin").exists()
