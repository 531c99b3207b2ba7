"""The synchronous session: ``requests`` for REST, ``websocket-client`` for the channels."""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
from types import TracebackType
from typing import Any

import requests
import websocket

from . import _protocol as proto
from ._base import Instrumentation, SessionBase, SessionState
from ._exceptions import KernelClientError, TransportError
from ._protocol import CLOSED, OutputCallback
from ._result import ExecutionResult

logger = logging.getLogger("jupyter_kernel_client")


def quickack(sock: socket.socket | None) -> None:
    """Acknowledge received data now instead of after the 40 ms delayed-ACK timer.

    A gateway that leaves Nagle's algorithm on holds each further small frame until the
    previous one is acknowledged; without this, every round trip to such a gateway (stock
    Enterprise Gateway 3.3 is one) costs ~40 ms.  Linux-only; the flag is not sticky, so it
    is set after every receive.
    """
    if sock is not None and hasattr(socket, "TCP_QUICKACK"):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


class _Channel:
    """One kernel websocket, read by a background thread so that pings are always answered."""

    def __init__(self, url: str, timeout: float, headers: dict[str, str]) -> None:
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
        self._ws.settimeout(None)
        self.subprotocol: str | None = self._ws.getsubprotocol()
        self._codec = proto.codec_for(self.subprotocol)
        self._frames: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Frames are only queued while an exchange is in progress; between exchanges they are
        # dropped so that traffic from other clients of the kernel cannot pile up.
        self.listening = False
        self._reader = threading.Thread(target=self._read, name="kernel-ws-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        sock, decode = self._ws.sock, self._codec.decode
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
                    self._frames.put(TransportError(f"malformed kernel message: {exc}"))
                    break
        except (websocket.WebSocketException, OSError, AttributeError):
            pass  # connection gone: reported to the waiting exchange as CLOSED
        finally:
            self._frames.put(CLOSED)

    def send(self, frame: str | bytes) -> None:
        try:
            if isinstance(frame, bytes):
                self._ws.send_bytes(frame)
            else:
                self._ws.send_text(frame)
        except (websocket.WebSocketException, OSError) as exc:
            raise TransportError(f"cannot send to the kernel websocket: {exc}") from exc

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
        return self._reader.is_alive()

    def close(self) -> None:
        with contextlib.suppress(websocket.WebSocketException, OSError):
            self._ws.send_close()
        self._reader.join(timeout=1.0)
        self._ws.shutdown()  # type: ignore[no-untyped-call]


class GatewayKernelSession(SessionBase):
    """A kernel on a Jupyter Enterprise Gateway, used synchronously.

    ``with GatewayKernelSession(http_url, ws_url, "python3") as s: s.execute("2 + 2")``
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
        kernel_id: str | None = None,
        metrics: Instrumentation | None = None,
        gateway_token: str | None = None,
    ) -> None:
        super().__init__(
            gateway_http,
            gateway_ws,
            kernel_name,
            launch_env,
            startup_timeout,
            max_retries,
            retry_delay,
            kernel_id=kernel_id,
            metrics=metrics,
            gateway_token=gateway_token,
        )
        self._http = requests.Session()
        self._http.headers.update(self._headers)
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
        :meth:`ExecutionResult.raise_for_error`.
        """
        with self._lock:
            flow = self._execute_flow(code, timeout, on_output)
            result: ExecutionResult = self._run(flow)
            return result

    def interrupt(self) -> None:
        """Interrupt whatever the kernel is running."""
        self._run(proto.interrupt_flow(self._require_started()), listen=False)

    def is_alive(self) -> bool:
        """Whether the gateway still has the kernel and it is not dead."""
        if self._state is not SessionState.STARTED or self._ref is None:
            return False
        if self._channel is None or not self._channel.alive:
            return False
        state = self._run(proto.kernel_state_flow(self._ref), listen=False)
        return state is not None and state != "dead"

    # --- the I/O of the protocol core's actions ---------------------------------------------

    def _run(self, flow: proto.Flow, *, listen: bool = True) -> Any:
        """Perform ``flow``'s actions until it returns.

        A flow that talks to the kernel (``listen``) owns the websocket's incoming messages for
        its duration; REST-only flows (interrupt, state, shutdown) leave them alone, so they
        can run beside an execute in progress.
        """
        outcome: Any = None
        failure: TransportError | None = None
        channel = self._channel if listen else None
        if channel is not None:
            channel.drain()
            channel.listening = True
        try:
            while True:
                try:
                    action = flow.throw(failure) if failure else flow.send(outcome)
                except StopIteration as stop:
                    return stop.value
                outcome, failure = None, None
                try:
                    outcome = self._perform(action)
                except TransportError as exc:
                    failure = exc
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
                raise TransportError("the kernel websocket is not open")
            self._channel.send(action.frame)
            return None
        if isinstance(action, proto.Http):
            try:
                response = self._http.request(
                    action.method, action.url, json=action.body, timeout=action.timeout
                )
            except requests.RequestException as exc:
                raise TransportError(f"{action.method} {action.url} failed: {exc}") from exc
            return proto.Response(response.status_code, response.text)
        if isinstance(action, proto.Connect):
            if self._channel is not None:
                self._channel.close()
            self._channel = None
            self._channel = _Channel(action.url, action.timeout, self._headers)
            self._channel.listening = True
            return self._channel.subprotocol
        if isinstance(action, proto.Sleep):
            time.sleep(action.seconds)
            return None
        raise AssertionError(f"unknown action {action!r}")
