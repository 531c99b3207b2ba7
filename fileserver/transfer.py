"""Streaming request and response bodies, with bounded memory.

Bytes arriving from the ASGI server are gathered into batches of about ``chunk_bytes`` and handed
to a worker thread once per batch: the event loop never blocks on the disk, and the thread
hand-off is paid per megabyte rather than per socket read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING
from urllib.parse import quote

import anyio
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from fileserver.errors import (
    BadRequestError,
    PayloadTooLargeError,
    UnsupportedMediaError,
)
from fileserver.paths import ConfinedPath, confine_entry
from fileserver.storage import AtomicWriter

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

# Room for part headers and boundaries on top of the file itself in a multipart body.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


def check_declared_length(request: Request, limit: int) -> None:
    """Refuse at once, before reading any body, when Content-Length already exceeds ``limit``."""
    declared = request.headers.get("content-length")
    if declared is None:
        return
    try:
        length = int(declared)
    except ValueError:
        raise BadRequestError("invalid Content-Length") from None
    if length > limit:
        raise PayloadTooLargeError(f"upload of {length} bytes exceeds the limit of {limit} bytes")


class _BatchIterator:
    """Async iterator over lists of body chunks totalling about ``chunk_bytes``."""

    def __init__(self, request: Request, limit: int, chunk_bytes: int) -> None:
        self._stream = request.stream().__aiter__()
        self._limit = limit
        self._chunk_bytes = chunk_bytes
        self._total = 0
        self._done = False

    def __aiter__(self) -> _BatchIterator:
        return self

    async def __anext__(self) -> list[bytes]:
        if self._done:
            raise StopAsyncIteration
        batch: list[bytes] = []
        size = 0
        try:
            while size < self._chunk_bytes:
                try:
                    chunk = await self._stream.__anext__()
                except StopAsyncIteration:
                    self._done = True
                    break
                if not chunk:
                    continue
                self._total += len(chunk)
                if self._total > self._limit:
                    raise PayloadTooLargeError(f"upload exceeds the limit of {self._limit} bytes")
                batch.append(chunk)
                size += len(chunk)
        except ClientDisconnect:
            raise BadRequestError("client disconnected before the body was complete") from None
        if not batch and self._done:
            raise StopAsyncIteration
        return batch


async def receive_to_file(
    request: Request, target: ConfinedPath, *, limit: int, chunk_bytes: int, fsync: bool
) -> bool:
    """Stream the raw request body to ``target`` atomically; True when the file was created."""
    check_declared_length(request, limit)
    writer = AtomicWriter(target, fsync=fsync)
    await anyio.to_thread.run_sync(writer.open)
    try:
        async for batch in _BatchIterator(request, limit, chunk_bytes):
            await anyio.to_thread.run_sync(writer.write, batch)
        return await anyio.to_thread.run_sync(writer.commit)
    finally:
        # Also reached on cancellation (client gone): the staged file must not outlive us.
        writer.abort()


class _MultipartUpload:
    """Callbacks for the streaming multipart parser: the ``file`` part goes straight to disk."""

    def __init__(self, directory: ConfinedPath, *, limit: int, fsync: bool) -> None:
        self._directory = directory
        self._limit = limit
        self._fsync = fsync
        self._header_field: list[bytes] = []
        self._header_value: list[bytes] = []
        self._headers: dict[bytes, bytes] = {}
        self._in_file_part = False
        self._file_bytes = 0
        self.writer: AtomicWriter | None = None
        self.file_complete = False

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._on_part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
        }

    def _on_part_begin(self) -> None:
        self._headers = {}
        self._in_file_part = False

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field.append(data[start:end])

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value.append(data[start:end])

    def _on_header_end(self) -> None:
        field = b"".join(self._header_field).strip().lower()
        self._headers[field] = b"".join(self._header_value).strip()
        self._header_field.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        disposition, params = parse_options_header(self._headers.get(b"content-disposition"))
        if disposition != b"form-data" or params.get(b"name") != b"file":
            return
        if self.writer is not None:
            raise BadRequestError("more than one 'file' part")
        raw_name = params.get(b"filename")
        if not raw_name:
            raise BadRequestError("the 'file' part has no filename")
        filename = raw_name.decode("utf-8", "replace")
        if "/" in filename:
            raise BadRequestError("the filename must not contain '/'")
        prefix = self._directory.relative
        # confine_entry validates the name; the writer refuses it if it names a symlink.
        target = confine_entry(self._directory.root, f"{prefix}/{filename}" if prefix else filename)
        writer = AtomicWriter(target, fsync=self._fsync)
        writer.open()
        self.writer = writer
        self._in_file_part = True

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._in_file_part or self.writer is None:
            return
        self._file_bytes += end - start
        if self._file_bytes > self._limit:
            raise PayloadTooLargeError(f"upload exceeds the limit of {self._limit} bytes")
        self.writer.write([memoryview(data)[start:end]])

    def _on_part_end(self) -> None:
        if self._in_file_part:
            self.file_complete = True
            self._in_file_part = False


async def receive_multipart(
    request: Request, directory: ConfinedPath, *, limit: int, chunk_bytes: int, fsync: bool
) -> tuple[ConfinedPath, bool]:
    """Stream the ``file`` part of a multipart body into ``directory``.

    Returns the written path and whether it was created.
    """
    media_type, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if media_type != b"multipart/form-data" or not boundary:
        raise UnsupportedMediaError("expected multipart/form-data with a boundary")
    body_limit = limit + MULTIPART_OVERHEAD_BYTES
    check_declared_length(request, body_limit)
    upload = _MultipartUpload(directory, limit=limit, fsync=fsync)
    try:
        try:
            parser = MultipartParser(boundary, upload.callbacks())
        except FormParserError as exc:
            raise BadRequestError(f"malformed multipart body: {exc}") from None
        async for batch in _BatchIterator(request, body_limit, chunk_bytes):
            data = batch[0] if len(batch) == 1 else b"".join(batch)
            await anyio.to_thread.run_sync(_feed(parser), data)
        await anyio.to_thread.run_sync(_finish(parser))
        if upload.writer is None or not upload.file_complete:
            raise BadRequestError("the multipart body has no complete 'file' part")
        writer = upload.writer
        created = await anyio.to_thread.run_sync(writer.commit)
        return writer.target, created
    finally:
        if upload.writer is not None:
            upload.writer.abort()


def _feed(parser: MultipartParser) -> Callable[[bytes], None]:
    def feed(data: bytes) -> None:
        try:
            parser.write(data)
        except FormParserError as exc:
            raise BadRequestError(f"malformed multipart body: {exc}") from None

    return feed


def _finish(parser: MultipartParser) -> Callable[[], None]:
    def finish() -> None:
        try:
            parser.finalize()
        except FormParserError as exc:
            raise BadRequestError(f"malformed multipart body: {exc}") from None

    return finish


class FileStreamResponse(Response):
    """Streams an open file descriptor as ``application/octet-stream`` and closes it.

    Unlike ``FileResponse`` it serves the descriptor that was opened through the confinement
    walk, not a path that could be swapped between check and open.
    """

    media_type = "application/octet-stream"

    def __init__(self, fd: int, size: int, filename: str, chunk_bytes: int) -> None:
        self._fd = fd
        self._size = size
        self._chunk_bytes = chunk_bytes
        super().__init__(
            content=None,
            status_code=200,
            media_type=self.media_type,
            headers={
                "content-length": str(size),
                "x-content-type-options": "nosniff",
                # Served as an attachment so a browser never renders kernel-written HTML.
                "content-disposition": "attachment; filename*=UTF-8''" + quote(filename, safe=""),
            },
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            remaining = self._size
            while remaining > 0:
                chunk = await anyio.to_thread.run_sync(
                    os.read, self._fd, min(self._chunk_bytes, remaining)
                )
                if not chunk:
                    # The file shrank while being sent; returning without finishing makes the
                    # server drop the connection, so the client sees a short body.
                    return
                remaining -= len(chunk)
                await send(
                    {"type": "http.response.body", "body": chunk, "more_body": remaining > 0}
                )
            if self._size == 0:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            os.close(self._fd)


class JsonArrayStreamResponse(Response):
    """Streams a JSON array whose items a blocking producer renders batch by batch.

    ``next_batch`` runs in a worker thread and returns encoded items, ``[]`` when there are no
    more; ``close`` runs once the response is over, however it ends. Memory is one batch,
    whatever the array's length. Sent chunked: the length is not known in advance.
    """

    media_type = "application/json"

    def __init__(
        self,
        next_batch: Callable[[], list[bytes]],
        close: Callable[[], None],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        # Not Response.__init__: it would render an empty body and declare Content-Length: 0.
        self._next_batch = next_batch
        self._close = close
        self.status_code = 200
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            opening = b"["
            while items := await anyio.to_thread.run_sync(self._next_batch):
                body = opening + b",".join(items)
                await send({"type": "http.response.body", "body": body, "more_body": True})
                opening = b","
            closing = b"[]" if opening == b"[" else b"]"
            await send({"type": "http.response.body", "body": closing, "more_body": False})
        finally:
            self._close()
