"""Transfers through the file server: what both faces share, and the sync face's I/O.

The async face's I/O is in ``_async_session``; both stream (a transfer is never held in
memory), report progress, and write downloads atomically (temp file, then rename).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, Final
from urllib.parse import quote

import requests

from ._config import FileServerConfig
from ._exceptions import (
    FileServerAuthError,
    FileServerError,
    FileTooLargeError,
    RemoteFileNotFoundError,
    TransportError,
)
from ._fileops import confine
from ._protocol import gateway_reason

ProgressCallback = Callable[[int, int | None], None]
"""Called with (bytes done, total bytes or None) as a transfer proceeds."""
Report = Callable[[int], None]

CHUNK_SIZE: Final = 1024 * 1024


@dataclass(frozen=True)
class Upload:
    """A validated upload: which local file, to which path of the shared volume."""

    source: Path
    remote: str
    total: int
    url: str
    kernel_path: str
    """Where the kernel sees the file."""

    @classmethod
    def plan(
        cls, files: FileServerConfig, local_path: str | os.PathLike[str], remote_path: str | None
    ) -> Upload:
        source = Path(local_path)
        if not source.is_file():
            raise FileNotFoundError(f"no such local file: {source}")
        remote = confine(remote_path if remote_path is not None else source.name)
        if not remote:
            raise ValueError("remote_path must name a file")
        return cls(
            source,
            remote,
            source.stat().st_size,
            file_url(files, remote),
            posixpath.join(files.shared_dir, remote),
        )


@dataclass(frozen=True)
class Download:
    """A validated download: which file of the shared volume, to which local path."""

    remote: str
    target: Path
    url: str

    @classmethod
    def plan(
        cls, files: FileServerConfig, remote_path: str, local_path: str | os.PathLike[str] | None
    ) -> Download:
        remote = confine(remote_path)
        if not remote:
            raise ValueError("remote_path must name a file")
        name = posixpath.basename(remote)
        target = Path(local_path) if local_path is not None else Path(name)
        if target.is_dir():
            target = target / name
        return cls(remote, target, file_url(files, remote))


def file_url(files: FileServerConfig, remote: str) -> str:
    return f"{files.url}/files/{quote(remote, safe='/')}"


def file_server_error(status: int, body: str, remote: str) -> FileServerError:
    message = f"file server refused {remote!r}: HTTP {status}: {gateway_reason(body)}"
    if status in (401, 403):
        return FileServerAuthError(message, status_code=status)
    if status == 404:
        return RemoteFileNotFoundError(message, status_code=status)
    if status == 413:
        return FileTooLargeError(message, status_code=status)
    return FileServerError(message, status_code=status)


@contextlib.contextmanager
def atomic_file(target: Path) -> Iterator[IO[bytes]]:
    """A temp file beside ``target`` that becomes ``target`` only if the block succeeds."""
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as sink:
            yield sink
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temp)
        raise


@contextlib.contextmanager
def reporter(
    progress: ProgressCallback | None, show_progress: bool, total: int | None, label: str
) -> Iterator[Report]:
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


def content_length(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


# --- the sync face's I/O (requests) --------------------------------------------------------------


def upload(
    http: requests.Session,
    files: FileServerConfig,
    plan: Upload,
    progress: ProgressCallback | None,
    show_progress: bool,
) -> str:
    with (
        reporter(progress, show_progress, plan.total, f"upload {plan.source.name}") as report,
        plan.source.open("rb") as stream,
    ):
        body = _ReportingReader(stream, plan.total, report)
        _request(http, files, "PUT", plan.url, plan.remote, data=body).close()
    return plan.kernel_path


def download(
    http: requests.Session,
    files: FileServerConfig,
    plan: Download,
    progress: ProgressCallback | None,
    show_progress: bool,
) -> Path:
    response = _request(http, files, "GET", plan.url, plan.remote, stream=True)
    total = content_length(response.headers.get("Content-Length"))
    label = f"download {plan.target.name}"
    with (
        response,
        reporter(progress, show_progress, total, label) as report,
        atomic_file(plan.target) as sink,
    ):
        try:
            for chunk in response.iter_content(CHUNK_SIZE):
                sink.write(chunk)
                report(len(chunk))
        except requests.RequestException as exc:
            raise TransportError(f"GET {plan.url} failed: {exc}") from exc
    return plan.target


def _request(
    http: requests.Session,
    files: FileServerConfig,
    method: str,
    url: str,
    remote: str,
    **kwargs: Any,
) -> requests.Response:
    timeout = (files.connect_timeout, files.read_timeout)
    try:
        response = http.request(method, url, headers=files.headers, timeout=timeout, **kwargs)
    except requests.RequestException as exc:
        raise TransportError(f"{method} {url} failed: {exc}") from exc
    if response.status_code >= 400:
        with response:
            raise file_server_error(response.status_code, response.text, remote)
    return response


class _ReportingReader:
    """A file wrapper with a known length (so the body is sent with Content-Length, not
    chunked) that reports every block read."""

    def __init__(self, stream: BinaryIO, total: int, report: Report) -> None:
        self._stream, self._total, self._report = stream, total, report

    def __len__(self) -> int:
        return self._total

    def read(self, size: int = CHUNK_SIZE) -> bytes:
        chunk = self._stream.read(max(size, CHUNK_SIZE))
        self._report(len(chunk))
        return chunk
