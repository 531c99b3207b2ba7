"""What the sync and the async session share: configuration, lifecycle and flow construction.

Each face adds only the I/O that performs the protocol core's actions (see ``_protocol``).
"""

from __future__ import annotations

import enum
import os
import time
import uuid
from typing import Any, Protocol

from . import _protocol as proto
from ._exceptions import KernelClientError, SessionStateError
from ._protocol import KernelRef, Message, OutputCallback
from ._result import ExecutionResult


class Instrumentation(Protocol):
    """What a session reports about itself (``_metrics.KernelMetrics`` implements it)."""

    def started(self, kernel_name: str, seconds: float) -> None: ...
    def closed(self, kernel_name: str) -> None: ...
    def executed(self, kernel_name: str, result: ExecutionResult) -> None: ...
    def failed(self, kernel_name: str, operation: str, error: BaseException) -> None: ...
    def acquired(self, kernel_name: str, seconds: float) -> None: ...


class SessionState(enum.Enum):
    NEW = "new"
    STARTED = "started"
    CLOSED = "closed"


class SessionBase:
    """Configuration and lifecycle of one kernel on an Enterprise Gateway."""

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
        _check_url("gateway_http", gateway_http, ("http://", "https://"))
        _check_url("gateway_ws", gateway_ws, ("ws://", "wss://"))
        if not isinstance(kernel_name, str) or not kernel_name.strip():
            raise ValueError("kernel_name must be a non-empty string")
        if startup_timeout <= 0:
            raise ValueError("startup_timeout must be positive")
        if max_retries < 0 or retry_delay < 0:
            raise ValueError("max_retries and retry_delay must not be negative")
        # Validate launch_env now rather than on the first (possibly retried) request.
        proto.start_kernel_body(kernel_name, launch_env)
        self.gateway_http = gateway_http.rstrip("/")
        self.gateway_ws = gateway_ws.rstrip("/")
        self.kernel_name = kernel_name
        self.launch_env = dict(launch_env or {})
        self.startup_timeout = float(startup_timeout)
        self.max_retries = int(max_retries)
        self.retry_delay = float(retry_delay)
        self.kernel_info: dict[str, Any] = {}
        self.metrics = metrics
        token = gateway_token or os.environ.get("JUPYTER_GATEWAY_AUTH_TOKEN")
        # Enterprise Gateway's EG_AUTH_TOKEN, sent on every request and the websocket.
        self._headers = {"Authorization": f"token {token}"} if token else {}
        self._attach_to = kernel_id
        self._owns_kernel = kernel_id is None
        self._ref: KernelRef | None = None
        self._codec = proto.JSON_CODEC
        self._state = SessionState.NEW
        self._username = proto.kernel_username(launch_env)

    @property
    def kernel_id(self) -> str | None:
        """The gateway's id of the kernel, once started."""
        return self._ref.kernel_id if self._ref else self._attach_to

    @property
    def closed(self) -> bool:
        return self._state is SessionState.CLOSED

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.kernel_name!r} kernel_id={self.kernel_id!r} "
            f"{self._state.value}>"
        )

    # --- flows for the faces to run ---------------------------------------------------------

    def _begin_start(self) -> None:
        if self._state is SessionState.CLOSED:
            raise SessionStateError("this session is closed; create a new one")
        if self._state is SessionState.STARTED:
            raise SessionStateError("this session is already started")

    def _start_flow(self) -> proto.Flow:
        return self._observed(self._start_and_connect(), "start")

    def _start_and_connect(self) -> proto.Flow:
        kernel_id = self._attach_to
        if kernel_id is None:
            kernel_id = yield from proto.start_flow(
                self.gateway_http,
                self.kernel_name,
                self.launch_env,
                startup_timeout=self.startup_timeout,
                max_retries=self.max_retries,
                retry_delay=self.retry_delay,
            )
        self._ref = KernelRef(self.gateway_http, self.gateway_ws, kernel_id, uuid.uuid4().hex)
        self._codec, self.kernel_info = yield from proto.connect_flow(
            self._ref,
            username=self._username,
            startup_timeout=self.startup_timeout,
            max_retries=self.max_retries,
            retry_delay=self.retry_delay,
        )

    def _execute_flow(
        self, code: str, timeout: float, on_output: OutputCallback | None
    ) -> proto.Flow:
        if not isinstance(code, str):
            raise TypeError(f"code must be a string, not {type(code).__name__}")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        ref = self._require_started()
        request: Message = proto.execute_request(
            code, session_id=ref.session_id, username=self._username
        )
        collector = proto.ExecutionCollector(request["header"]["msg_id"], on_output=on_output)
        flow = proto.execute_flow(ref, self._codec, request, collector, timeout)
        return self._observed(flow, "execute")

    def _observed(self, flow: proto.Flow, operation: str) -> proto.Flow:
        """``flow``, reporting its outcome and duration to :attr:`metrics`."""
        if self.metrics is None:
            return (yield from flow)
        started = time.monotonic()
        try:
            value = yield from flow
        except KernelClientError as exc:
            self.metrics.failed(self.kernel_name, operation, exc)
            raise
        if operation == "start":
            self.metrics.started(self.kernel_name, time.monotonic() - started)
        elif isinstance(value, ExecutionResult):
            self.metrics.executed(self.kernel_name, value)
        return value

    def _mark_closed(self) -> None:
        if self._state is SessionState.STARTED and self.metrics is not None:
            self.metrics.closed(self.kernel_name)
        self._state = SessionState.CLOSED

    def _require_started(self) -> KernelRef:
        if self._state is SessionState.CLOSED:
            raise SessionStateError("this session is closed; create a new one")
        if self._ref is None or self._state is not SessionState.STARTED:
            raise SessionStateError("the session is not started: call start() or use `with`")
        return self._ref

    def _shutdown_flow(self) -> proto.Flow:
        if self._ref is not None and self._owns_kernel:
            yield from proto.shutdown_flow(self._ref)


def _check_url(name: str, value: str, schemes: tuple[str, ...]) -> None:
    if not isinstance(value, str) or not value.startswith(schemes):
        raise ValueError(f"{name} must start with {' or '.join(schemes)}, got {value!r}")
