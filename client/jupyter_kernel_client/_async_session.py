"""The asynchronous session: ``aiohttp`` for REST and the channels, same core as the sync one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from types import TracebackType
from typing import Any

import aiohttp

from . import _protocol as proto
from ._base import Instrumentation, SessionBase, SessionState
from ._exceptions import KernelClientError, TransportError
from ._protocol import CLOSED, OutputCallback
from ._result import ExecutionResult
from ._session import quickack

logger = logging.getLogger("jupyter_kernel_client")


class _AsyncChannel:
    """One kernel websocket, read by a background task so pings are always answered."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
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
        except (aiohttp.ClientError, OSError):
            pass  # connection gone: reported to the waiting exchange as CLOSED
        finally:
            self._frames.put_nowait(CLOSED)

    async def send(self, frame: str | bytes) -> None:
        try:
            if isinstance(frame, bytes):
                await self._ws.send_bytes(frame)
            else:
                await self._ws.send_str(frame)
        except (aiohttp.ClientError, OSError, ConnectionResetError) as exc:
            raise TransportError(f"cannot send to the kernel websocket: {exc}") from exc

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
        return not self._reader.done()

    async def close(self) -> None:
        with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
            await asyncio.wait_for(self._ws.close(), 1.0)
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class AsyncGatewayKernelSession(SessionBase):
    """A kernel on a Jupyter Enterprise Gateway, used with ``await``.

    ``async with AsyncGatewayKernelSession(http_url, ws_url, "python3") as s:
    await s.execute("2 + 2")``
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
        self._http: aiohttp.ClientSession | None = None
        self._channel: _AsyncChannel | None = None
        self._lock = asyncio.Lock()

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> AsyncGatewayKernelSession:
        """Start the kernel (or attach to ``kernel_id``) and wait until it answers."""
        async with self._lock:
            self._begin_start()
            self._http = aiohttp.ClientSession(headers=self._headers)
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

    async def interrupt(self) -> None:
        """Interrupt whatever the kernel is running."""
        await self._run(proto.interrupt_flow(self._require_started()), listen=False)

    async def is_alive(self) -> bool:
        """Whether the gateway still has the kernel and it is not dead."""
        if self._state is not SessionState.STARTED or self._ref is None:
            return False
        if self._channel is None or not self._channel.alive:
            return False
        state = await self._run(proto.kernel_state_flow(self._ref), listen=False)
        return state is not None and state != "dead"

    # --- the I/O of the protocol core's actions ---------------------------------------------

    async def _run(self, flow: proto.Flow, *, listen: bool = True) -> Any:
        """Perform ``flow``'s actions until it returns (see ``GatewayKernelSession._run``)."""
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
                    outcome = await self._perform(action)
                except TransportError as exc:
                    failure = exc
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
                raise TransportError("the kernel websocket is not open")
            await self._channel.send(action.frame)
            return None
        http = self._http
        if http is None or http.closed:
            raise TransportError("the session's HTTP connection is closed")
        if isinstance(action, (proto.Http, proto.Sleep)):
            return await perform_http_action(http, action)
        if isinstance(action, proto.Connect):
            if self._channel is not None:
                await self._channel.close()
            self._channel = None
            try:
                ws = await asyncio.wait_for(
                    http.ws_connect(
                        action.url,
                        protocols=(proto.WS_SUBPROTOCOL,),
                        max_msg_size=0,
                        autoping=True,
                    ),
                    action.timeout,
                )
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                raise TransportError(
                    f"cannot open the kernel websocket {action.url}: {exc}"
                ) from exc
            self._channel = _AsyncChannel(ws)
            self._channel.listening = True
            return self._channel.subprotocol
        raise AssertionError(f"unknown action {action!r}")


# --- flows that need HTTP only (gateway REST), for callers without a kernel websocket ----------


async def perform_http_action(
    http: aiohttp.ClientSession, action: proto.Http | proto.Sleep
) -> proto.Response | None:
    """Perform one REST action of the protocol core with ``http``.

    Connection failures and timeouts become :class:`TransportError`, which the runner throws
    back into the flow (the core decides whether to retry).
    """
    if isinstance(action, proto.Sleep):
        await asyncio.sleep(action.seconds)
        return None
    try:
        async with http.request(
            action.method,
            action.url,
            json=action.body,
            timeout=aiohttp.ClientTimeout(total=action.timeout),
        ) as response:
            return proto.Response(response.status, await response.text())
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
        raise TransportError(f"{action.method} {action.url} failed: {exc}") from exc


async def run_http_flow(http: aiohttp.ClientSession, flow: proto.Flow) -> Any:
    """Run a protocol-core flow that only talks REST (start, state, shutdown, listing).

    Used by callers that have no kernel websocket, e.g. the SandboxSession controller; a flow
    that asks for a websocket action is a programming error.
    """
    outcome: Any = None
    failure: TransportError | None = None
    while True:
        try:
            action = flow.throw(failure) if failure else flow.send(outcome)
        except StopIteration as stop:
            return stop.value
        outcome, failure = None, None
        if not isinstance(action, (proto.Http, proto.Sleep)):
            flow.close()
            raise TypeError(f"run_http_flow cannot perform {type(action).__name__} actions")
        try:
            outcome = await perform_http_action(http, action)
        except TransportError as exc:
            failure = exc
