"""What the sync and the async session share: configuration, features, lifecycle and flows.

Each face adds only the I/O that performs the protocol core's actions (see ``_protocol``): it
inherits the constructor, and implements ``_connected`` and the ``_perform`` of actions.
"""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from . import _protocol as proto
from ._commands import GRACE as COMMAND_GRACE
from ._commands import CommandRequest, command_request, command_result, describe, report_of
from ._config import FileServerConfig, GatewayConfig, coerce_config
from ._exceptions import (
    CommandError,
    CommandTimeoutError,
    ConnectionLostError,
    ExecutionTimeoutError,
    FileOperationError,
    KernelClientError,
    KernelDiedError,
    SessionStateError,
)
from ._fileops import FileOp, FileOpValue, file_op_code, file_op_result
from ._protocol import KernelRef, Message, OutputCallback
from ._result import ExecutionResult, OutputEvent

CommandOutputCallback = Callable[[str, str], None]
"""``on_output(stream, text)`` of ``run_command``: ``stream`` is ``"stdout"`` or ``"stderr"``."""


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
    """Configuration and lifecycle of one kernel on an Enterprise Gateway.

    Either the seed's arguments (``gateway_http, gateway_ws, kernel_name, launch_env,
    startup_timeout, max_retries, retry_delay``, plus ``gateway_token``, ``max_output_bytes``
    and ``max_message_bytes``) or one :class:`GatewayConfig` as the first argument.  Features
    are arguments, combinable on both faces: ``files=`` (a :class:`FileServerConfig`: file
    operations, upload, download) and ``metrics=`` (e.g. ``KernelMetrics.for_registry(r)``).
    ``kernel_id=`` attaches to a running kernel instead of starting one.
    """

    def __init__(
        self,
        gateway_http: str | GatewayConfig,
        gateway_ws: str | None = None,
        kernel_name: str | None = None,
        launch_env: Mapping[str, str] | None = None,
        startup_timeout: float = 30,
        max_retries: int = 3,
        retry_delay: float = 1.0,
        *,
        kernel_id: str | None = None,
        files: FileServerConfig | None = None,
        metrics: Instrumentation | None = None,
        gateway_token: str | None = None,
        max_output_bytes: int | None = None,
        max_message_bytes: int | None = None,
    ) -> None:
        self.config = coerce_config(
            gateway_http,
            gateway_ws,
            kernel_name,
            launch_env=launch_env,
            startup_timeout=startup_timeout,
            max_retries=max_retries,
            retry_delay=retry_delay,
            token=gateway_token,
            max_output_bytes=max_output_bytes,
            max_message_bytes=max_message_bytes,
        )
        if files is not None and not isinstance(files, FileServerConfig):
            raise TypeError(f"files must be a FileServerConfig, not {type(files).__name__}")
        self.files = files
        self.metrics = metrics
        self.kernel_info: dict[str, Any] = {}
        self._attach_to = kernel_id
        self._owns_kernel = kernel_id is None
        self._ref: KernelRef | None = None
        self._codec = proto.JSON_CODEC
        self._state = SessionState.NEW
        self._kernel_died = False  # a request raised KernelDiedError (a pool will not reuse it)
        self._init_io()

    @property
    def kernel_name(self) -> str:
        return self.config.kernel_name

    @property
    def gateway_http(self) -> str:
        return self.config.gateway_http

    @property
    def gateway_ws(self) -> str:
        return self.config.gateway_ws

    @property
    def kernel_id(self) -> str | None:
        """The gateway's id of the kernel, once started."""
        return self._ref.kernel_id if self._ref else self._attach_to

    @property
    def subprotocol(self) -> str | None:
        """The kernel websocket subprotocol the gateway selected (``None``: legacy JSON)."""
        return self._codec.subprotocol

    @property
    def closed(self) -> bool:
        return self._state is SessionState.CLOSED

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.kernel_name!r} kernel_id={self.kernel_id!r} "
            f"{self._state.value}>"
        )

    # --- what each face provides ------------------------------------------------------------

    def _init_io(self) -> None:
        """Set up the face's I/O state (called at the end of ``__init__``)."""
        raise NotImplementedError

    def _connected(self) -> bool:
        """Whether the kernel's websocket is open (else the next request reconnects)."""
        raise NotImplementedError

    # --- flows for the faces to run ---------------------------------------------------------

    def _begin_start(self) -> None:
        if self._state is SessionState.CLOSED:
            raise SessionStateError("this session is closed; create a new one")
        if self._state is SessionState.STARTED:
            raise SessionStateError("this session is already started")

    def _start_flow(self) -> proto.Flow:
        return self._instrumented(self._start_and_connect(), "start")

    def _start_and_connect(self) -> proto.Flow:
        kernel_id = self._attach_to
        if kernel_id is None:
            kernel_id = yield from proto.start_flow(self.config)
        yield from self._connect(kernel_id)

    def _connect(self, kernel_id: str) -> proto.Flow:
        # A new session id on every connection: the gateway replays what it buffered for a
        # known one, and that could be the very message that broke the previous connection.
        config = self.config
        self._ref = KernelRef(config.gateway_http, config.gateway_ws, kernel_id, uuid.uuid4().hex)
        self._codec, self.kernel_info = yield from proto.connect_flow(self._ref, config)

    def _execute_flow(
        self, code: str, timeout: float, on_output: OutputCallback | None
    ) -> proto.Flow:
        if not isinstance(code, str):
            raise TypeError(f"code must be a string, not {type(code).__name__}")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._require_started()
        flow = self._noting_death(self._execute(code, timeout, on_output))
        return self._instrumented(flow, "execute")

    def _noting_death(self, flow: proto.Flow) -> proto.Flow:
        try:
            return (yield from flow)
        except KernelDiedError:
            self._kernel_died = True
            raise

    def _execute(
        self, code: str, timeout: float, on_output: OutputCallback | None, *, silent: bool = False
    ) -> proto.Flow:
        ref = self._require_started()
        if not self._connected():
            yield from self._connect(ref.kernel_id)  # the websocket dropped since the last use
            ref = self._require_started()
        for attempt in (1, 2):
            request: Message = proto.execute_request(
                code, session_id=ref.session_id, username=self.config.username, silent=silent
            )
            collector = proto.ExecutionCollector(
                request["header"]["msg_id"],
                on_output=on_output,
                max_output_bytes=self.config.max_output_bytes,
            )
            try:
                return (
                    yield from proto.execute_flow(ref, self._codec, request, collector, timeout)
                )
            except ConnectionLostError as exc:
                # The connection died between the check above and the send: the kernel never
                # got the request, so it is sent again, once, on a new connection.
                if exc.request_sent or attempt == 2:
                    raise
            yield from self._connect(ref.kernel_id)
            ref = self._require_started()
        raise AssertionError("unreachable")

    def _command_flow(
        self,
        cmd: str | Sequence[str],
        timeout: float,
        cwd: str | None,
        env: Mapping[str, str] | None,
        on_output: CommandOutputCallback | None,
    ) -> proto.Flow:
        request = command_request(
            cmd, timeout=timeout, cwd=cwd, env=env, budget=self.config.max_output_bytes
        )
        self._require_started()
        self._require_python("run_command", CommandError)
        flow = self._noting_death(self._run_command(cmd, request, on_output))
        return self._instrumented(flow, "command")

    def _run_command(
        self,
        cmd: str | Sequence[str],
        request: CommandRequest,
        on_output: CommandOutputCallback | None,
    ) -> proto.Flow:
        reports: list[dict[str, Any]] = []

        def collect(event: OutputEvent) -> None:
            report = report_of(event, request.nonce)
            if report is not None:
                reports.append(report)
            elif on_output is not None and event.kind in ("stdout", "stderr"):
                on_output(event.kind, event.text)

        what, limit = describe(cmd), request.timeout
        try:
            result = yield from self._execute(
                request.code, limit + COMMAND_GRACE, collect, silent=True
            )
        except ExecutionTimeoutError as exc:
            raise CommandTimeoutError(
                f"{what} did not end within {limit:g} s and the kernel did not report it "
                "killed; the kernel was interrupted"
            ) from exc
        outcome, timed_out = command_result(result, reports[-1] if reports else None, what=what)
        if timed_out:
            raise CommandTimeoutError(
                f"{what} ran past its timeout of {limit:g} s; its processes were killed", outcome
            )
        return outcome

    def _file_op_flow(
        self, op: FileOp, path: str, content: str | bytes | None, binary: bool, timeout: float
    ) -> proto.Flow:
        code = file_op_code(op, path, content, self._require_files().shared_dir)
        self._require_python("execute_file_op", FileOperationError)
        result = yield from self._execute_flow(code, timeout, None)
        value: FileOpValue = file_op_result(op, path, result, binary=binary)
        return value

    def _require_python(self, operation: str, error: type[KernelClientError]) -> None:
        """Refuse an operation that runs Python in the kernel when the kernel runs another
        language (it would fail there with that language's syntax error, or worse)."""
        language = self.kernel_info.get("language_info", {}).get("name")
        if language not in (None, "python"):
            raise error(
                f"{operation} needs a Python kernel; {self.kernel_name!r} runs {language!r}"
            )

    def _require_files(self) -> FileServerConfig:
        if self.files is None:
            raise SessionStateError(
                "this session has no file server: pass files=FileServerConfig(url, token)"
            )
        return self.files

    def _instrumented(self, flow: proto.Flow, operation: str) -> proto.Flow:
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

    def _require_open(self) -> None:
        if self._state is SessionState.CLOSED:
            raise SessionStateError("this session is closed; create a new one")

    def _require_started(self) -> KernelRef:
        if self._state is SessionState.CLOSED:
            raise SessionStateError("this session is closed; create a new one")
        if self._ref is None or self._state is not SessionState.STARTED:
            raise SessionStateError("the session is not started: call start() or use `with`")
        return self._ref

    def _alive_flow(self) -> proto.Flow:
        if self._state is not SessionState.STARTED or self._ref is None:
            return False
        state = yield from proto.kernel_state_flow(self._ref)
        return state is not None and state != "dead"

    def _shutdown_flow(self) -> proto.Flow:
        if self._ref is not None and self._owns_kernel:
            yield from proto.shutdown_flow(self._ref)
