"""Features by composition: one session with ``files=`` and ``metrics=``, sync and async, against
a real gateway, a real file server and a Prometheus registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from jupyter_kernel_client import (
    AsyncGatewayKernelSession,
    FileOperationError,
    FileServerAuthError,
    FileServerConfig,
    FileTooLargeError,
    GatewayConfig,
    GatewayKernelSession,
    KernelMetrics,
    RemoteFileNotFoundError,
)
from testkit.gateway import Gateway
from tests.integration.fileserver.fileserver_harness import FileServer, start_uvicorn

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB: more than one transfer chunk


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServer]:
    base = tmp_path_factory.mktemp("composition")
    (base / "shared").mkdir()
    running = start_uvicorn(base / "shared", base / "server.log", max_upload_bytes=2 * 1024 * 1024)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def files(server: FileServer) -> FileServerConfig:
    return FileServerConfig(server.base_url, server.token, shared_dir=str(server.root))


def samples(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, {"kernel_name": "python3", **labels})
    return value or 0.0


def test_sync_session_with_files_and_metrics(
    gateway: Gateway, files: FileServerConfig, server: FileServer, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    config = GatewayConfig(gateway.http, gateway.ws)
    metrics = KernelMetrics.for_registry(registry)
    with GatewayKernelSession(config, files=files, metrics=metrics) as session:
        assert session.execute_file_op("write", "sync/a.txt", content="hello") == 5
        assert session.execute_file_op("read", "sync/a.txt") == "hello"
        local = tmp_path / "up.bin"
        local.write_bytes(PAYLOAD)
        progress: list[tuple[int, int | None]] = []
        remote = session.upload_to_kernel(
            local, "sync/up.bin", progress=lambda *a: progress.append(a)
        )
        assert remote == f"{server.root}/sync/up.bin"
        assert progress[-1] == (len(PAYLOAD), len(PAYLOAD))
        assert str(session.execute(f"len(open({remote!r}, 'rb').read())")) == str(len(PAYLOAD))
        back = session.download_from_kernel("sync/up.bin", tmp_path / "down.bin")
        assert back.read_bytes() == PAYLOAD
        assert samples(registry, "jupyter_kernel_active_sessions") == 1
    # File operations are executions: counted with the others.
    assert samples(registry, "jupyter_kernel_executions_total", status="ok") == 3
    assert samples(registry, "jupyter_kernel_start_duration_seconds_count") == 1
    assert samples(registry, "jupyter_kernel_active_sessions") == 0


async def test_async_session_with_files_and_metrics(
    gateway: Gateway, files: FileServerConfig, server: FileServer, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    config = GatewayConfig(gateway.http, gateway.ws)
    metrics = KernelMetrics.for_registry(registry)
    async with AsyncGatewayKernelSession(config, files=files, metrics=metrics) as session:
        assert await session.execute_file_op("write", "async/b.bin", content=b"\x00\xff") == 2
        assert await session.execute_file_op("append", "async/b.bin", content=b"!") == 1
        assert await session.execute_file_op("read", "async/b.bin", binary=True) == b"\x00\xff!"
        assert await session.execute_file_op("exists", "async/b.bin") is True
        listing = await session.execute_file_op("list", "async")
        assert listing == [{"name": "b.bin", "size": 3, "is_dir": False}]
        (server.root / "async" / "out").symlink_to(tmp_path)  # inside the root, leading out
        with pytest.raises(FileOperationError, match="PermissionError"):
            await session.execute_file_op("read", "async/out/x")
        with pytest.raises(ValueError):
            await session.execute_file_op("read", "../escape")

        local = tmp_path / "up.bin"
        local.write_bytes(PAYLOAD)
        progress: list[tuple[int, int | None]] = []
        remote = await session.upload_to_kernel(
            local, "async/up.bin", progress=lambda *a: progress.append(a)
        )
        assert progress[-1] == (len(PAYLOAD), len(PAYLOAD))
        assert (server.root / "async" / "up.bin").read_bytes() == PAYLOAD
        assert str(await session.execute(f"len(open({remote!r}, 'rb').read())")) == str(
            len(PAYLOAD)
        )
        into = tmp_path / "downloads"
        into.mkdir()
        back = await session.download_from_kernel("async/up.bin", into)
        assert back == into / "up.bin" and back.read_bytes() == PAYLOAD

        with pytest.raises(RemoteFileNotFoundError):
            await session.download_from_kernel("async/missing", tmp_path / "missing")
        assert not (tmp_path / "missing").exists()
        big = tmp_path / "big.bin"
        big.write_bytes(b"x" * (3 * 1024 * 1024))
        with pytest.raises(FileTooLargeError):
            await session.upload_to_kernel(big, "async/big.bin")
        assert not (server.root / "async" / "big.bin").exists()
        assert await session.execute_file_op("delete", "async/b.bin") is None
    assert samples(registry, "jupyter_kernel_executions_total", status="ok") == 7
    assert samples(registry, "jupyter_kernel_executions_total", status="error") == 1
    assert samples(registry, "jupyter_kernel_active_sessions") == 0


async def test_async_wrong_file_server_token_is_refused(
    gateway: Gateway, server: FileServer, tmp_path: Path
) -> None:
    wrong = FileServerConfig(server.base_url, "wrong", shared_dir=str(server.root))
    local = tmp_path / "f.txt"
    local.write_text("x")
    session = AsyncGatewayKernelSession(GatewayConfig(gateway.http), files=wrong)
    try:
        with pytest.raises(FileServerAuthError) as info:
            await session.upload_to_kernel(local)
        assert info.value.status_code == 401
    finally:
        await session.close()
