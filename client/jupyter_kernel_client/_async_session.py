"""The asynchronous session: ``aiohttp`` for REST and the channels, same core as the sync one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from . import _protocol as proto
from ._base import CommandOutputCallback, SessionBase, SessionState
from ._commands import CommandResult
from ._config import FileServerConfig
from ._exceptions import ConnectionLostError, KernelClientError, TransportError, unsent
from ._fileops import FileOp, FileOpValue
from ._files import (
    CHUNK_SIZE,
    Download,
    ProgressCallback,
    Upload,
    atomic_file,
    content_length,
    file_server_error,
    reporter,
)
from ._net import quickack
from ._protocol import CLOSED, OutputCallback
from ._result import ExecutionResult

logger = logging.getLogger("jupyter_kernel_client")

_TRANSPORT_ERRORS = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


class _AsyncChannel:
    """One kernel websocket, read by a background task so pings are always answered."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, limit: int) -> None:
        self._ws = ws
        self._limit = limit
        self.subprotocol: str | None = ws.protocol
        self._codec = proto.codec_for(self.subprotocol)
        self._frames: asyncio.Queue[Any] = asyncio.Queue()
        self.listening = False
        raw = ws.get_extra_info("socket")
        self._sock: socket.socket | None = raw if raw is not None else None
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        decode = self._codec.decode
        try:
            while True:
                message = await self._ws.receive()
                quickack(self._sock)
                if message.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    if message.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
                        continue
                    if self._ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG:
                        self._frames.put_nowait(proto.oversized_message(self._limit))
                    break  # close, closing, closed or error
                if not self.listening:
                    continue
                # A list, so that pop() hands the decoder the frame's only reference.
                box = [message.data]
                del message
                try:
                    self._frames.put_nowait(decode(box.pop()))
                except (ValueError, KeyError, TypeError) as exc:
                    self._frames.put_nowait(TransportError(f"malformed kernel message: {exc}"))
                    break
        except _TRANSPORT_ERRORS:
            pass  # connection gone: reported to the waiting exchange as CLOSED
        finally:
            self._frames.put_nowait(CLOSED)

    async def send(self, frame: str | bytes) -> None:
        try:
            if isinstance(frame, bytes):
                await self._ws.send_bytes(frame)
            else:
                await self._ws.send_str(frame)
        except (*_TRANSPORT_ERRORS, ConnectionResetError) as exc:
            raise unsent(exc) from exc

    async def receive(self, timeout: float) -> Any:
        try:
            frame = await asyncio.wait_for(self._frames.get(), timeout)
        except asyncio.TimeoutError:
            return None
        if frame is CLOSED:
            self._frames.put_nowait(CLOSED)
        elif isinstance(frame, TransportError):
            raise frame
        return frame

    def drain(self) -> None:
        while not self._frames.empty():
            if self._frames.get_nowait() is CLOSED:
                self._frames.put_nowait(CLOSED)
                return

    @property
    def alive(self) -> bool:
        return not self._reader.done() and not self._ws.closed

    async def close(self) -> None:
        with contextlib.suppress(*_TRANSPORT_ERRORS):
            await asyncio.wait_for(self._ws.close(), 1.0)
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class AsyncGatewayKernelSession(SessionBase):
    """A kernel on a Jupyter Enterprise Gateway, used with ``await``.

    ``async with AsyncGatewayKernelSession(http_url, ws_url, "python3") as s:
    await s.execute("2 + 2")``, or ``AsyncGatewayKernelSession(config, files=..., metrics=...)``
    (see :class:`SessionBase`).
    """

    def _init_io(self) -> None:
        self._http: aiohttp.ClientSession | None = None
        self._channel: _AsyncChannel | None = None
        self._lock = asyncio.Lock()

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> AsyncGatewayKernelSession:
        """Start the kernel (or attach to ``kernel_id``) and wait until it answers."""
        async with self._lock:
            self._begin_start()
            try:
                await self._run(self._start_flow())
            except BaseException:
                await self._abandon()
                raise
            self._state = SessionState.STARTED
            return self

    async def shutdown(self) -> None:
        """Shut the kernel down (when this session started it) and close the connection."""
        async with self._lock:
            if self._state is SessionState.CLOSED:
                return
            try:
                await self._run(self._shutdown_flow(), listen=False)
            finally:
                await self._close_transport()

    close = shutdown

    async def _abandon(self) -> None:
        try:
            await self._run(self._shutdown_flow(), listen=False)
        except KernelClientError:
            logger.warning("could not shut down kernel %s after a failed start", self.kernel_id)
        await self._close_transport()

    async def _close_transport(self) -> None:
        self._mark_closed()
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
        if self._http is not None:
            await self._http.close()

    async def __aenter__(self) -> AsyncGatewayKernelSession:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.shutdown()
            return
        try:
            await self.shutdown()
        except KernelClientError:
            logger.warning("shutdown of kernel %s failed", self.kernel_id, exc_info=True)

    # --- kernel operations --------------------------------------------------------------------

    async def execute(
        self, code: str, timeout: float = 10, *, on_output: OutputCallback | None = None
    ) -> ExecutionResult:
        """Run ``code``; see :meth:`GatewayKernelSession.execute`."""
        async with self._lock:
            flow = self._execute_flow(code, timeout, on_output)
            result: ExecutionResult = await self._run(flow)
            return result

    async def run_command(
        self,
        cmd: str | Sequence[str],
        *,
        timeout: float = 60,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        on_output: CommandOutputCallback | None = None,
    ) -> CommandResult:
        """Run a shell command in the kernel's container; see
        :meth:`GatewayKernelSession.run_command`."""
        async with self._lock:
            result: CommandResult = await self._run(
                self._command_flow(cmd, timeout, cwd, env, on_output)
            )
            return result

    async def interrupt(self) -> None:
        """Interrupt whatever the kernel is running."""
        await self._run(proto.interrupt_flow(self._require_started()), listen=False)

    async def is_alive(self) -> bool:
        """Whether the gateway still has the kernel and it is not dead."""
        return bool(await self._run(self._alive_flow(), listen=False))

    # --- files (``files=``) ---------------------------------------------------------------

    async def execute_file_op(
        self,
        op: FileOp,
        path: str,
        content: str | bytes | None = None,
        *,
        binary: bool = False,
        timeout: float = 60,
    ) -> FileOpValue:
        """See :meth:`GatewayKernelSession.execute_file_op`."""
        async with self._lock:
            value: FileOpValue = await self._run(
                self._file_op_flow(op, path, content, binary, timeout)
            )
            return value

    async def upload_to_kernel(
        self,
        local_path: str | os.PathLike[str],
        remote_path: str | None = None,
        *,
        progress: ProgressCallback | None = None,
        show_progress: bool = False,
    ) -> str:
        """Upload a local file (streamed); return the path under which the kernel sees it."""
        files = self._require_files()
        plan = Upload.plan(files, local_path, remote_path)
        label = f"upload {plan.source.name}"
        with reporter(progress, show_progress, plan.total, label) as report:
            body = _read_chunks(plan.source, report)
            headers = {**files.headers, "Content-Length": str(plan.total)}
            http = self._http_session()
            async with _file_request(http, files, "PUT", plan, data=body, headers=headers):
                pass
        return plan.kernel_path

    async def download_from_kernel(
        self,
        remote_path: str,
        local_path: str | os.PathLike[str] | None = None,
        *,
        progress: ProgressCallback | None = None,
        show_progress: bool = False,
    ) -> Path:
        """Download a file of the shared volume (streamed, written atomically); return its path."""
        files = self._require_files()
        plan = Download.plan(files, remote_path, local_path)
        async with _file_request(self._http_session(), files, "GET", plan) as response:
            total = content_length(response.headers.get("Content-Length"))
            label = f"download {plan.target.name}"
            with (
                reporter(progress, show_progress, total, label) as report,
                atomic_file(plan.target) as sink,
            ):
                async for chunk in response.content.iter_chunked(CHUNK_SIZE):
                    await asyncio.to_thread(sink.write, chunk)
                    report(len(chunk))
        return plan.target

    # --- the I/O of the protocol core's actions ---------------------------------------------

    def _http_session(self) -> aiohttp.ClientSession:
        self._require_open()
        if self._http is None:
            self._http = aiohttp.ClientSession(headers=self.config.headers)
        return self._http

    def _connected(self) -> bool:
        return self._channel is not None and self._channel.alive

    async def _run(self, flow: proto.Flow, *, listen: bool = True) -> Any:
        """Perform ``flow``'s actions until it returns (see ``GatewayKernelSession._run``)."""
        channel = self._channel if listen else None
        if channel is not None:
            channel.drain()
            channel.listening = True
        try:
            return await proto.run_flow_async(flow, self._perform)
        finally:
            if listen and self._channel is not None:
                self._channel.listening = False

    async def _perform(self, action: proto.Action) -> Any:
        if isinstance(action, proto.Receive):
            if self._channel is None:
                return CLOSED
            return await self._channel.receive(action.timeout)
        if isinstance(action, proto.Send):
            if self._channel is None:
                raise ConnectionLostError("the kernel websocket is not open")
            await self._channel.send(action.frame)
            return None
        http = self._http if self._http is not None else self._http_session()
        if http.closed:
            raise TransportError("the session's HTTP connection is closed")
        if isinstance(action, proto.Connect):
            if self._channel is not None:
                await self._channel.close()
            self._channel = None
            limit = self.config.message_limit
            try:
                ws = await asyncio.wait_for(
                    http.ws_connect(
                        action.url,
                        protocols=(proto.WS_SUBPROTOCOL,),
                        max_msg_size=limit,
                        autoping=True,
                    ),
                    action.timeout,
                )
            except _TRANSPORT_ERRORS as exc:
                raise TransportError(
                    f"cannot open the kernel websocket {action.url}: {exc}"
                ) from exc
            self._channel = _AsyncChannel(ws, limit)
            self._channel.listening = True
            return self._channel.subprotocol
        return await perform_rest_async(http, action, self.config.request_timeout)


async def perform_rest_async(
    http: aiohttp.ClientSession, action: proto.Action, request_timeout: float
) -> proto.Response | None:
    """Perform one REST action (:class:`~proto.Http` or :class:`~proto.Sleep`) with ``http``.

    Connection failures and timeouts become :class:`TransportError`, which the runner throws
    back into the flow (the core decides whether to retry).
    """
    if isinstance(action, proto.Sleep):
        await asyncio.sleep(action.seconds)
        return None
    if not isinstance(action, proto.Http):
        raise TypeError(f"a REST performer cannot perform {type(action).__name__} actions")
    timeout = request_timeout if action.timeout is None else action.timeout
    try:
        async with http.request(
            action.method,
            action.url,
            json=action.body,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            return proto.Response(response.status, await response.text())
    except _TRANSPORT_ERRORS as exc:
        raise TransportError(f"{action.method} {action.url} failed: {exc}") from exc


# --- file server I/O ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _file_request(
    http: aiohttp.ClientSession,
    files: FileServerConfig,
    method: str,
    plan: Upload | Download,
    **kwargs: Any,
) -> AsyncIterator[aiohttp.ClientResponse]:
    kwargs.setdefault("headers", files.headers)
    timeout = aiohttp.ClientTimeout(
        sock_connect=files.connect_timeout, sock_read=files.read_timeout
    )
    try:
        async with http.request(method, plan.url, timeout=timeout, **kwargs) as response:
            if response.status >= 400:
                raise file_server_error(response.status, await response.text(), plan.remote)
            yield response
    except _TRANSPORT_ERRORS as exc:
        raise TransportError(f"{method} {plan.url} failed: {exc}") from exc


async def _read_chunks(source: Path, report: Any) -> AsyncIterator[bytes]:
    """``source`` in blocks, read off the event loop, each reported as it is sent."""
    with source.open("rb") as stream:
        while chunk := await asyncio.to_thread(stream.read, CHUNK_SIZE):
            report(len(chunk))
            yield chunk
