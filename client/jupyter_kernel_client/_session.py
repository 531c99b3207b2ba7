"""The synchronous session: ``requests`` for REST, ``websocket-client`` for the channels."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import requests
import websocket

from . import _files
from . import _protocol as proto
from ._base import CommandOutputCallback, SessionBase, SessionState
from ._commands import CommandResult
from ._exceptions import ConnectionLostError, KernelClientError, TransportError, unsent
from ._fileops import FileOp, FileOpValue
from ._files import Download, ProgressCallback, Upload
from ._net import quickack
from ._protocol import CLOSED, OutputCallback
from ._result import ExecutionResult

logger = logging.getLogger("jupyter_kernel_client")

_DATA_OPCODES = frozenset(
    {websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY, websocket.ABNF.OPCODE_CONT}
)


class _TooLarge(websocket.WebSocketException):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message of {size} bytes")
        self.size, self.limit = size, limit


class _BoundedFrames(websocket.frame_buffer):
    """websocket-client's frame reader, refusing a message above ``limit`` from its header,
    before a byte of its payload is read."""

    def __init__(
        self, recv: Callable[[int], bytes], limit: int, pending: Callable[[], int]
    ) -> None:
        super().__init__(recv, skip_utf8_validation=True)
        self.limit = limit
        self._pending = pending  # bytes of a fragmented message received so far

    def recv_length(self) -> None:
        super().recv_length()
        assert self.header is not None and self.length is not None
        if self.header[4] in _DATA_OPCODES:
            size = self.length + self._pending()
            if size > self.limit:
                raise _TooLarge(size, self.limit)


class _Channel:
    """One kernel websocket, read by a background thread so that pings are always answered."""

    def __init__(self, url: str, timeout: float, headers: dict[str, str], limit: int) -> None:
        try:
            self._ws = websocket.create_connection(
                url,
                timeout=timeout,
                header=headers,
                subprotocols=[proto.WS_SUBPROTOCOL],
                skip_utf8_validation=True,
                enable_multithread=True,
            )
        except (websocket.WebSocketException, OSError) as exc:
            raise TransportError(f"cannot open the kernel websocket {url}: {exc}") from exc
        ws = self._ws
        ws.frame_buffer = _BoundedFrames(ws._recv, limit, self._fragments)
        ws.settimeout(None)
        self.subprotocol: str | None = ws.getsubprotocol()
        self._codec = proto.codec_for(self.subprotocol)
        self._frames: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Frames are only queued while an exchange is in progress; between exchanges they are
        # dropped so that traffic from other clients of the kernel cannot pile up.
        self.listening = False
        self._open = True
        self._reader = threading.Thread(target=self._read, name="kernel-ws-reader", daemon=True)
        self._reader.start()

    def _fragments(self) -> int:
        pending = self._ws.cont_frame.cont_data
        return len(pending[1]) if pending else 0

    def _read(self) -> None:
        sock, decode = self._ws.sock, self._codec.decode
        failure: TransportError | None = None
        try:
            while True:
                # A list, so that pop() hands the decoder the frame's only reference.
                received = list(self._ws.recv_data())
                quickack(sock)
                opcode = received[0]
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    break
                if not self.listening:
                    continue
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    received.append(received.pop().decode("utf-8"))
                try:
                    self._frames.put(decode(received.pop()))
                except (ValueError, KeyError, TypeError) as exc:
                    failure = TransportError(f"malformed kernel message: {exc}")
                    break
        except _TooLarge as exc:
            failure = proto.oversized_message(exc.limit, exc.size)
        except (websocket.WebSocketException, OSError, AttributeError):
            pass  # connection gone: reported to the waiting exchange as CLOSED
        finally:
            # Closed before anyone hears of it, so that the next request reconnects.
            self._open = False
            if failure is not None:
                self._ws.shutdown()  # type: ignore[no-untyped-call]  # cannot go on mid-stream
                self._frames.put(failure)
            self._frames.put(CLOSED)

    def send(self, frame: str | bytes) -> None:
        try:
            if isinstance(frame, bytes):
                self._ws.send_bytes(frame)
            else:
                self._ws.send_text(frame)
        except (websocket.WebSocketException, OSError) as exc:
            raise unsent(exc) from exc

    def receive(self, timeout: float) -> Any:
        try:
            frame = self._frames.get(timeout=timeout)
        except queue.Empty:
            return None
        if frame is CLOSED:
            self._frames.put(CLOSED)  # stays closed for every later receive
        elif isinstance(frame, TransportError):
            raise frame
        return frame

    def drain(self) -> None:
        """Forget frames left over from an earlier exchange."""
        while True:
            try:
                frame = self._frames.get_nowait()
            except queue.Empty:
                return
            if frame is CLOSED:
                self._frames.put(CLOSED)
                return

    @property
    def alive(self) -> bool:
        return self._open

    def close(self) -> None:
        with contextlib.suppress(websocket.WebSocketException, OSError):
            self._ws.send_close()
        self._reader.join(timeout=1.0)
        self._ws.shutdown()  # type: ignore[no-untyped-call]


class GatewayKernelSession(SessionBase):
    """A kernel on a Jupyter Enterprise Gateway, used synchronously.

    ``with GatewayKernelSession(http_url, ws_url, "python3") as s: s.execute("2 + 2")``, or
    ``GatewayKernelSession(config, files=..., metrics=...)`` (see :class:`SessionBase`).
    """

    def _init_io(self) -> None:
        self._http = requests.Session()
        self._http.headers.update(self.config.headers)
        self._channel: _Channel | None = None
        self._lock = threading.RLock()

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> GatewayKernelSession:
        """Start the kernel (or attach to ``kernel_id``) and wait until it answers."""
        with self._lock:
            self._begin_start()
            try:
                self._run(self._start_flow())
            except BaseException:
                self._abandon()
                raise
            self._state = SessionState.STARTED
            return self

    def shutdown(self) -> None:
        """Shut the kernel down (when this session started it) and close the connection."""
        with self._lock:
            if self._state is SessionState.CLOSED:
                return
            try:
                self._run(self._shutdown_flow(), listen=False)
            finally:
                self._close_transport()

    close = shutdown

    def _abandon(self) -> None:
        """Best-effort cleanup after a failed start: no kernel may be left behind."""
        try:
            self._run(self._shutdown_flow(), listen=False)
        except KernelClientError:
            logger.warning("could not shut down kernel %s after a failed start", self.kernel_id)
        self._close_transport()

    def _close_transport(self) -> None:
        self._mark_closed()
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        self._http.close()

    def __enter__(self) -> GatewayKernelSession:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.shutdown()
            return
        try:
            self.shutdown()
        except KernelClientError:
            logger.warning("shutdown of kernel %s failed", self.kernel_id, exc_info=True)

    # --- kernel operations --------------------------------------------------------------------

    def execute(
        self, code: str, timeout: float = 10, *, on_output: OutputCallback | None = None
    ) -> ExecutionResult:
        """Run ``code``; ``on_output`` receives each output as it arrives.

        On timeout the kernel is interrupted and :class:`ExecutionTimeoutError` is raised; the
        session stays usable.  An exception in the code does not raise: see
        :meth:`ExecutionResult.raise_for_error`.  If the connection drops meanwhile,
        :class:`ConnectionLostError` is raised and the next call reconnects.
        """
        with self._lock:
            flow = self._execute_flow(code, timeout, on_output)
            result: ExecutionResult = self._run(flow)
            return result

    def run_command(
        self,
        cmd: str | Sequence[str],
        *,
        timeout: float = 60,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        on_output: CommandOutputCallback | None = None,
    ) -> CommandResult:
        """Run a shell command in the kernel's container; return its exit code and output.

        A string is run by ``/bin/sh -c``, a list as it is, without a shell; ``cwd`` and
        ``env`` (added to the kernel's environment) are data, never shell text.  stdout and
        stderr are kept apart, within ``max_output_bytes``; ``on_output(stream, text)`` gets
        them as they arrive.  Past ``timeout`` seconds the command's whole process group is
        killed and :class:`CommandTimeoutError` is raised; the session stays usable.  A
        command that cannot be started raises :class:`CommandError`.
        """
        with self._lock:
            result: CommandResult = self._run(self._command_flow(cmd, timeout, cwd, env, on_output))
            return result

    def interrupt(self) -> None:
        """Interrupt whatever the kernel is running."""
        self._run(proto.interrupt_flow(self._require_started()), listen=False)

    def is_alive(self) -> bool:
        """Whether the gateway still has the kernel and it is not dead."""
        return bool(self._run(self._alive_flow(), listen=False))

    # --- files (``files=``) ---------------------------------------------------------------

    def execute_file_op(
        self,
        op: FileOp,
        path: str,
        content: str | bytes | None = None,
        *,
        binary: bool = False,
        timeout: float = 60,
    ) -> FileOpValue:
        """Perform ``op`` on ``path`` (relative to the shared volume) inside the kernel.

        ``write``/``append`` take ``content`` (str or bytes) and return the bytes written;
        ``read`` returns str (bytes with ``binary=True``); ``list`` returns entries (name,
        size, is_dir); ``exists`` returns a bool; ``delete`` returns None.
        """
        with self._lock:
            value: FileOpValue = self._run(self._file_op_flow(op, path, content, binary, timeout))
            return value

    def upload_to_kernel(
        self,
        local_path: str | os.PathLike[str],
        remote_path: str | None = None,
        *,
        progress: ProgressCallback | None = None,
        show_progress: bool = False,
    ) -> str:
        """Upload a local file (streamed); return the path under which the kernel sees it."""
        self._require_open()
        files = self._require_files()
        plan = Upload.plan(files, local_path, remote_path)
        return _files.upload(self._http, files, plan, progress, show_progress)

    def download_from_kernel(
        self,
        remote_path: str,
        local_path: str | os.PathLike[str] | None = None,
        *,
        progress: ProgressCallback | None = None,
        show_progress: bool = False,
    ) -> Path:
        """Download a file of the shared volume (streamed, written atomically); return its path."""
        self._require_open()
        files = self._require_files()
        plan = Download.plan(files, remote_path, local_path)
        return _files.download(self._http, files, plan, progress, show_progress)

    # --- the I/O of the protocol core's actions ---------------------------------------------

    def _connected(self) -> bool:
        return self._channel is not None and self._channel.alive

    def _run(self, flow: proto.Flow, *, listen: bool = True) -> Any:
        """Perform ``flow``'s actions until it returns.

        A flow that talks to the kernel (``listen``) owns the websocket's incoming messages for
        its duration; REST-only flows (interrupt, state, shutdown) leave them alone, so they
        can run beside an execute in progress.
        """
        channel = self._channel if listen else None
        if channel is not None:
            channel.drain()
            channel.listening = True
        try:
            return proto.run_flow(flow, self._perform)
        finally:
            if listen and self._channel is not None:
                self._channel.listening = False

    def _perform(self, action: proto.Action) -> Any:
        if isinstance(action, proto.Receive):
            if self._channel is None:
                return CLOSED
            return self._channel.receive(action.timeout)
        if isinstance(action, proto.Send):
            if self._channel is None:
                raise ConnectionLostError("the kernel websocket is not open")
            self._channel.send(action.frame)
            return None
        if isinstance(action, proto.Connect):
            if self._channel is not None:
                self._channel.close()
            self._channel = None
            self._channel = _Channel(
                action.url, action.timeout, self.config.headers, self.config.message_limit
            )
            self._channel.listening = True
            return self._channel.subprotocol
        return perform_rest(self._http, action, self.config.request_timeout)


def perform_rest(
    http: requests.Session, action: proto.Action, request_timeout: float
) -> proto.Response | None:
    """Perform one REST action (:class:`~proto.Http` or :class:`~proto.Sleep`) with ``http``.

    Connection failures and timeouts become :class:`TransportError`, which the runner throws
    back into the flow (the core decides whether to retry).
    """
    if isinstance(action, proto.Sleep):
        time.sleep(action.seconds)
        return None
    if not isinstance(action, proto.Http):
        raise TypeError(f"a REST performer cannot perform {type(action).__name__} actions")
    timeout = request_timeout if action.timeout is None else action.timeout
    try:
        response = http.request(action.method, action.url, json=action.body, timeout=timeout)
    except requests.RequestException as exc:
        raise TransportError(f"{action.method} {action.url} failed: {exc}") from exc
    return proto.Response(response.status_code, response.text)
