"""AuthenticatedKernelSession: file operations in the kernel and through the file server."""

from __future__ import annotations

import contextlib
import os
import posixpath
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import requests

from ._exceptions import (
    FileServerAuthError,
    FileServerError,
    FileTooLargeError,
    RemoteFileNotFoundError,
    TransportError,
)
from ._fileops import confine, file_op_code, file_op_result
from ._protocol import gateway_reason
from ._session import GatewayKernelSession

ProgressCallback = Callable[[int, int | None], None]
"""Called with (bytes done, total bytes or None) as a transfer proceeds."""

CHUNK_SIZE = 1024 * 1024
DEFAULT_SHARED_DIR = "/data/shared"


class AuthenticatedKernelSession(GatewayKernelSession):
    """A session that also moves files between this machine and the kernel's shared volume.

    ``execute_file_op`` runs in the kernel on ``shared_dir``; ``upload_to_kernel`` and
    ``download_from_kernel`` go through the token-protected file server whose root is the same
    volume.
    """

    def __init__(
        self,
        gateway_http: str,
        gateway_ws: str,
        kernel_name: str,
        launch_env: dict[str, str] | None = None,
        startup_timeout: float = 30,
        max_retries: int = 3,
        retry_delay: float = 1.0,
        *,
        file_server_url: str,
        auth_token: str,
        shared_dir: str = DEFAULT_SHARED_DIR,
        **kwargs: Any,
    ) -> None:
        if not isinstance(file_server_url, str) or not file_server_url.startswith(
            ("http://", "https://")
        ):
            raise ValueError(f"file_server_url must be an http(s) URL, got {file_server_url!r}")
        if not isinstance(auth_token, str) or not auth_token:
            raise ValueError("auth_token must be a non-empty string")
        if not posixpath.isabs(shared_dir):
            raise ValueError(f"shared_dir must be an absolute path, got {shared_dir!r}")
        super().__init__(
            gateway_http,
            gateway_ws,
            kernel_name,
            launch_env,
            startup_timeout,
            max_retries,
            retry_delay,
            **kwargs,
        )
        self.file_server_url = file_server_url.rstrip("/")
        self.shared_dir = shared_dir
        self._files = requests.Session()
        self._files.headers["Authorization"] = f"Bearer {auth_token}"

    def shutdown(self) -> None:
        try:
            super().shutdown()
        finally:
            self._files.close()

    close = shutdown

    def execute_file_op(
        self,
        op: str,
        path: str,
        content: str | bytes | None = None,
        *,
        binary: bool = False,
        timeout: float = 60,
    ) -> Any:
        """Perform ``op`` on ``path`` (relative to the shared volume) inside the kernel.

        ``write``/``append`` take ``content`` (str or bytes) and return the bytes written;
        ``read`` returns str (bytes with ``binary=True``); ``list`` returns entries (name,
        size, is_dir); ``exists`` returns a bool; ``delete`` returns None.
        """
        code = file_op_code(op, path, content, self.shared_dir)
        result = self.execute(code, timeout=timeout)
        return file_op_result(op, path, result, binary=binary)

    def upload_to_kernel(
        self,
        local_path: str | os.PathLike[str],
        remote_path: str | None = None,
        *,
        progress: ProgressCallback | None = None,
        show_progress: bool = False,
    ) -> str:
        """Upload a local file (streamed); return the path under which the kernel sees it."""
        source = Path(local_path)
        if not source.is_file():
            raise FileNotFoundError(f"no such local file: {source}")
        remote = confine(remote_path if remote_path is not None else source.name)
        if not remote:
            raise ValueError("remote_path must name a file")
        total = source.stat().st_size
        with (
            _reporter(progress, show_progress, total, f"upload {source.name}") as report,
            source.open("rb") as stream,
        ):
            self._request("PUT", remote, data=_ReportingReader(stream, total, report)).close()
        return posixpath.join(self.shared_dir, remote)

    def download_from_kernel(
        self,
        remote_path: str,
        local_path: str | os.PathLike[str] | None = None,
        *,
        progress: ProgressCallback | None = None,
        show_progress: bool = False,
    ) -> Path:
        """Download a file of the shared volume (streamed, written atomically); return its path."""
        remote = confine(remote_path)
        if not remote:
            raise ValueError("remote_path must name a file")
        target = Path(local_path) if local_path is not None else Path(posixpath.basename(remote))
        if target.is_dir():
            target = target / posixpath.basename(remote)
        response = self._request("GET", remote, stream=True)
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        fd, temp = tempfile.mkstemp(dir=target.parent or ".", prefix=f".{target.name}.")
        try:
            with (
                _reporter(progress, show_progress, total, f"download {target.name}") as report,
                os.fdopen(fd, "wb") as sink,
                response,
            ):
                for chunk in response.iter_content(CHUNK_SIZE):
                    sink.write(chunk)
                    report(len(chunk))
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(temp)
            raise
        return target

    def _request(self, method: str, remote: str, **kwargs: Any) -> requests.Response:
        url = f"{self.file_server_url}/files/{quote(remote, safe='/')}"
        try:
            response = self._files.request(method, url, timeout=(10, 300), **kwargs)
        except requests.RequestException as exc:
            raise TransportError(f"{method} {url} failed: {exc}") from exc
        if response.status_code >= 400:
            raise _file_server_error(response, remote)
        return response


def _file_server_error(response: requests.Response, remote: str) -> FileServerError:
    status = response.status_code
    reason = gateway_reason(response.text)
    response.close()
    message = f"file server refused {remote!r}: HTTP {status}: {reason}"
    if status in (401, 403):
        return FileServerAuthError(message, status_code=status)
    if status == 404:
        return RemoteFileNotFoundError(message, status_code=status)
    if status == 413:
        return FileTooLargeError(message, status_code=status)
    return FileServerError(message, status_code=status)


class _ReportingReader:
    """A file wrapper with a known length (so the body is sent with Content-Length, not
    chunked) that reports every block read."""

    def __init__(self, stream: BinaryIO, total: int, report: Callable[[int], None]) -> None:
        self._stream, self._total, self._report = stream, total, report

    def __len__(self) -> int:
        return self._total

    def read(self, size: int = CHUNK_SIZE) -> bytes:
        chunk = self._stream.read(max(size, CHUNK_SIZE))
        self._report(len(chunk))
        return chunk


@contextlib.contextmanager
def _reporter(
    progress: ProgressCallback | None, show_progress: bool, total: int | None, label: str
) -> Iterator[Callable[[int], None]]:
    """A ``report(n_bytes)`` function feeding the callback and, if asked, a tqdm bar."""
    bar: Any = None
    if show_progress:
        from tqdm import tqdm  # the 'auth' extra

        bar = tqdm(total=total, unit="B", unit_scale=True, desc=label)
    done = 0

    def report(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)
        if bar is not None:
            bar.update(n)

    try:
        yield report
    finally:
        if bar is not None:
            bar.close()
