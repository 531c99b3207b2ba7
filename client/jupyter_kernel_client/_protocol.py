"""The I/O-free protocol core shared by the sync and the async session.

Everything that decides *what* to send and *what a message means* lives here: building
requests, matching replies to their request by parent ``msg_id``, the completion rule (an
execution is over when the kernel reported ``idle`` for it *and* its ``execute_reply`` arrived),
assembling the result, retry policy and mapping gateway answers to exceptions.

The sessions only move bytes.  A conversation with the kernel is a generator (a *flow*) that
yields actions (:class:`Http`, :class:`Connect`, :class:`Send`, :class:`Receive`, :class:`Sleep`);
:func:`run_flow` drives a flow with a blocking ``perform(action)`` and :func:`run_flow_async` with
an awaitable one, sending each action's outcome back into the generator.  This is the shape of
httpx's auth flows.
"""

from __future__ import annotations

import itertools
import json
import struct
import textwrap
import time
import uuid
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Final
from urllib.parse import quote

from ._config import GatewayConfig
from ._exceptions import (
    AuthenticationError,
    ConnectionLostError,
    EgressRefusedError,
    ExecutionTimeoutError,
    GatewayError,
    GatewayRefusedError,
    KernelDiedError,
    KernelLimitError,
    StartupTimeoutError,
    TransportError,
    UnknownKernelNameError,
)
from ._result import ExecutionResult, KernelErrorInfo, OutputEvent

PROTOCOL_VERSION: Final = "5.3"
LIVENESS_INTERVAL: Final = 2.0
"""Seconds of silence during an execution after which the kernel's state is checked."""
INTERRUPT_GRACE: Final = 5.0
"""Seconds to wait for the interrupted execution to finish after a timeout."""
MIN_CONNECT_TIMEOUT: Final = 1.0
"""Seconds a websocket attempt gets at least, even when the start's deadline is nearly spent."""
MAX_RETRY_DELAY: Final = 30.0
KERNEL_INFO_RESEND: Final = 0.5
"""Seconds before an unanswered kernel_info_request is first re-sent (then doubling)."""
LOST_CHECK_TIMEOUT: Final = 5.0
"""Limit of the REST question "is the kernel still there?" asked when its websocket closed."""

Message = dict[str, Any]
OutputCallback = Callable[[OutputEvent], None]


# --- actions a flow asks its session to perform -------------------------------------------


@dataclass(frozen=True)
class Http:
    """Make an HTTP request to the gateway; outcome: a :class:`Response`.

    A connection failure is thrown into the flow as :class:`TransportError`.  ``timeout=None``
    means the performer's default (``GatewayConfig.request_timeout``).
    """

    method: str
    url: str
    body: dict[str, Any] | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class Response:
    status: int
    text: str


@dataclass(frozen=True)
class Connect:
    """Open the kernel's websocket (replacing any open one), offering :data:`WS_SUBPROTOCOL`.

    Outcome: the subprotocol the gateway selected, or ``None``; the session decodes what it
    receives with ``codec_for(that)``.  Failure: :class:`TransportError`.
    """

    url: str
    timeout: float


@dataclass(frozen=True)
class Send:
    """Send one websocket frame (text if ``str``, binary if ``bytes``)."""

    frame: str | bytes


@dataclass(frozen=True)
class Receive:
    """Receive one message, decoded by the session with the connection's codec.

    Outcome: the message, ``None`` on timeout, or :data:`CLOSED`.  A malformed frame is
    thrown into the flow as :class:`TransportError`.
    """

    timeout: float


@dataclass(frozen=True)
class Sleep:
    seconds: float


class _Closed:
    def __repr__(self) -> str:
        return "CLOSED"


CLOSED: Final = _Closed()
"""Outcome of :class:`Receive` when the websocket is closed."""

Action = Http | Connect | Send | Receive | Sleep
Flow = Generator[Action, Any, Any]


# --- running a flow ----------------------------------------------------------------------------


class _Stepper:
    """Advances a flow: the one place that sends outcomes and throws failures into it."""

    def __init__(self, flow: Flow) -> None:
        self._flow = flow
        self._outcome: Any = None
        self._failure: TransportError | None = None
        self.value: Any = None

    def next_action(self) -> Action | None:
        """The flow's next action, or ``None`` once it returned (its value in :attr:`value`)."""
        failure, self._failure = self._failure, None
        try:
            return self._flow.throw(failure) if failure else self._flow.send(self._outcome)
        except StopIteration as stop:
            self.value = stop.value
            return None

    def performed(self, outcome: Any) -> None:
        self._outcome = outcome

    def failed(self, failure: TransportError) -> None:
        """The action failed at the transport: the flow decides (retry, raise, …)."""
        self._outcome, self._failure = None, failure


def run_flow(flow: Flow, perform: Callable[[Action], Any]) -> Any:
    """Run ``flow`` to its end with a blocking ``perform(action) -> outcome``; return its value.

    ``perform`` raises :class:`TransportError` for a failed action; it is thrown into the flow.
    """
    stepper = _Stepper(flow)
    try:
        while (action := stepper.next_action()) is not None:
            try:
                stepper.performed(perform(action))
            except TransportError as exc:
                stepper.failed(exc)
    finally:
        flow.close()
    return stepper.value


async def run_flow_async(flow: Flow, perform: Callable[[Action], Awaitable[Any]]) -> Any:
    """:func:`run_flow` with an awaitable ``perform``."""
    stepper = _Stepper(flow)
    try:
        while (action := stepper.next_action()) is not None:
            try:
                stepper.performed(await perform(action))
            except TransportError as exc:
                stepper.failed(exc)
    finally:
        flow.close()
    return stepper.value


# --- messages --------------------------------------------------------------------------------


def new_message(
    msg_type: str, content: dict[str, Any], *, session_id: str, username: str, channel: str
) -> Message:
    """A Jupyter message in the gateway's websocket JSON form (``channel`` inside the message)."""
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": msg_type,
            "username": username,
            "session": session_id,
            "date": datetime.now(timezone.utc).isoformat(),
            "version": PROTOCOL_VERSION,
        },
        "parent_header": {},
        "metadata": {},
        "content": content,
        "channel": channel,
        "buffers": [],
    }


def execute_request(code: str, *, session_id: str, username: str, silent: bool = False) -> Message:
    """An ``execute_request``; the code is dedented so indented triple-quoted blocks run.

    ``silent`` code leaves no trace in the kernel's state: no execution count, no history, no
    ``_``; its streams and displays are still sent.
    """
    content = {
        "code": textwrap.dedent(code),
        "silent": silent,
        "store_history": not silent,
        "user_expressions": {},
        "allow_stdin": False,
        "stop_on_error": True,
    }
    return new_message(
        "execute_request", content, session_id=session_id, username=username, channel="shell"
    )


def kernel_info_request(*, session_id: str, username: str) -> Message:
    return new_message(
        "kernel_info_request", {}, session_id=session_id, username=username, channel="shell"
    )


WS_SUBPROTOCOL: Final = "v1.kernel.websocket.jupyter.org"
"""The kernel websocket protocol in which the gateway forwards the kernel's frames as they are,
instead of parsing and re-encoding every message as JSON; requested on every connection."""


@dataclass(frozen=True)
class Codec:
    """How messages travel on one websocket: the subprotocol the gateway selected."""

    subprotocol: str | None
    encode: Callable[[Message], str | bytes]
    decode: Callable[[Any], Message]
    """Takes the frame (str or bytes).  Pass it as the only reference (``decode(box.pop())``):
    the v1 decoder frees the frame before it parses the largest part, so a 20 MB output is
    held twice, not three times, at peak."""


def _encode_json(message: Message) -> str:
    return json.dumps(message, separators=(",", ":"))


def _decode_json(frame: str | bytes) -> Message:
    """The legacy form: one JSON text per message, ``channel`` inside it.

    A binary frame in this form carries buffers: ``n`` (uint32, big endian), ``n`` uint32
    offsets; part 0 is the JSON message, parts 1.. its buffers.
    """
    if isinstance(frame, str):
        message: Message = json.loads(frame)
        return message
    (count,) = struct.unpack_from("!I", frame, 0)
    offsets = [*struct.unpack_from(f"!{count}I", frame, 4), len(frame)]
    message = json.loads(frame[offsets[0] : offsets[1]])
    message["buffers"] = [frame[offsets[i] : offsets[i + 1]] for i in range(1, count)]
    return message


def _encode_v1(message: Message) -> bytes:
    """v1 form: count (uint64 LE), offsets (uint64 LE; the last is the end), the channel, then
    header, parent_header, metadata, content and buffers as separate parts."""
    parts = [
        message["channel"].encode(),
        *(
            json.dumps(message[key], separators=(",", ":")).encode()
            for key in ("header", "parent_header", "metadata", "content")
        ),
        *(bytes(b) for b in message.get("buffers", [])),
    ]
    offsets = [8 * (len(parts) + 2)]
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    head = b"".join(n.to_bytes(8, "little") for n in (len(offsets), *offsets))
    return head + b"".join(parts)


def _decode_v1(frame: bytes) -> Message:
    view = memoryview(frame)
    count = int.from_bytes(view[:8], "little")
    if count < 6 or len(view) < 8 * (count + 1):
        raise ValueError(f"malformed v1 kernel frame ({len(view)} bytes, {count} offsets)")
    offsets = [int.from_bytes(view[8 * i : 8 * (i + 1)], "little") for i in range(1, count + 1)]
    if offsets != sorted(offsets) or offsets[-1] > len(view):
        raise ValueError("malformed v1 kernel frame: offsets out of order or out of range")
    spans = list(itertools.pairwise(offsets))
    channel, header, parent, metadata, content_text = (
        str(view[a:b], "utf-8") for a, b in spans[:5]
    )
    buffers = [bytes(view[a:b]) for a, b in spans[5:]]
    # Free the frame before parsing the content, its largest part (see Codec.decode).
    view.release()
    del frame
    return {
        "channel": channel,
        "header": json.loads(header),
        "parent_header": json.loads(parent),
        "metadata": json.loads(metadata),
        "content": json.loads(content_text),
        "buffers": buffers,
    }


JSON_CODEC: Final = Codec(None, _encode_json, _decode_json)
V1_CODEC: Final = Codec(WS_SUBPROTOCOL, _encode_v1, _decode_v1)


def codec_for(subprotocol: str | None) -> Codec:
    """The codec for the subprotocol the gateway selected (none selected: legacy JSON)."""
    return V1_CODEC if subprotocol == WS_SUBPROTOCOL else JSON_CODEC


def message_type(message: Message) -> str | None:
    """The message's type, from its header (the only place in the v1 form)."""
    value = (message.get("header") or {}).get("msg_type") or message.get("msg_type")
    return value if isinstance(value, str) else None


def parent_id(message: Message) -> str | None:
    parent = message.get("parent_header") or {}
    value = parent.get("msg_id")
    return value if isinstance(value, str) else None


def kernel_lost(message: Message) -> str | None:
    """The state if this is the gateway telling that the kernel restarted or died, else None."""
    if message_type(message) == "status":
        state = message.get("content", {}).get("execution_state")
        if state in ("restarting", "dead", "autorestarting"):
            return str(state)
    return None


GATEWAY_MARK: Final = "sandbox_truncated"
"""Key in the metadata of a message that this project's gateway cut because it was above the
gateway's ``SANDBOX_MAX_MESSAGE_BYTES``: ``{"msg_type", "bytes", "limit", "kept"}``, ``kept``
being the characters of a stream's text that are the kernel's (a notice line follows them)."""


def gateway_cut(message: Message) -> int | None:
    """The characters of the kernel's text kept, if the gateway cut this message, else None."""
    metadata = message.get("metadata")
    mark = metadata.get(GATEWAY_MARK) if isinstance(metadata, dict) else None
    if not isinstance(mark, dict):
        return None
    kept = mark.get("kept")
    return kept if isinstance(kept, int) and not isinstance(kept, bool) and kept >= 0 else 0


# --- collecting one execution ------------------------------------------------------------------


class ExecutionCollector:
    """Assembles the result of one request from the messages that answer it.

    Messages whose parent ``msg_id`` is not ``msg_id`` are ignored, whatever their order; the
    request is complete once its shell reply arrived and (when ``wait_for_idle``) the kernel
    reported ``idle`` for it on iopub — the two channels are not ordered against each other.
    """

    def __init__(
        self,
        msg_id: str,
        *,
        reply_type: str = "execute_reply",
        wait_for_idle: bool = True,
        on_output: OutputCallback | None = None,
        max_output_bytes: int | None = None,
    ) -> None:
        self.msg_id = msg_id
        self.msg_ids = {msg_id}
        """The requests this collector answers (more than one when a request is re-sent)."""
        self.reply_type = reply_type
        self.reply: Message | None = None
        self.outputs: list[OutputEvent] = []
        self.truncated = False
        """Whether output past ``max_output_bytes`` was dropped."""
        self._idle = not wait_for_idle
        self._on_output = on_output
        self._limit = max_output_bytes
        self._kept = 0
        self._clear_pending = False
        self._started = time.monotonic()

    @property
    def done(self) -> bool:
        return self._idle and self.reply is not None

    def feed(self, message: Message) -> None:
        """Take one message; foreign ones are ignored."""
        if parent_id(message) not in self.msg_ids:
            return
        msg_type = message_type(message)
        content = message.get("content", {})
        kept = gateway_cut(message)
        if kept is not None:
            # The gateway cut a message above its own limit: the output is truncated, whatever
            # this client's budget; only the kernel's part of a stream's text is output.
            self.truncated = True
            if msg_type == "stream":
                text = str(content.get("text", ""))[:kept]
                if not text:
                    return
                content = {**content, "text": text}
        if msg_type == self.reply_type:
            self.reply = content
        elif msg_type == "status":
            if content.get("execution_state") == "idle":
                self._idle = True
        elif msg_type == "clear_output":
            if content.get("wait"):
                self._clear_pending = True
            else:
                self._clear()
        else:
            event = _output_event(msg_type, content)
            if event is not None:
                self._emit(event)

    def _clear(self) -> None:
        self.outputs.clear()
        self._kept = 0

    def _emit(self, event: OutputEvent) -> None:
        """Keep ``event`` within the output budget; the callback sees every event."""
        if self._clear_pending:
            self._clear()
            self._clear_pending = False
        self._keep(event)
        if self._on_output is not None:
            self._on_output(event)

    def _keep(self, event: OutputEvent) -> None:
        size = _output_size(event)
        if self._limit is None or self._kept + size <= self._limit:
            self._kept += size
            self.outputs.append(event)
            return
        # Past the budget: keep what fits of a text, then nothing more (no holes in the middle).
        room = self._limit - self._kept
        if room > 0 and event.text:
            self.outputs.append(replace(event, text=event.text[:room]))
        self._kept = self._limit
        self.truncated = True

    def result(self) -> ExecutionResult:
        reply = self.reply or {}
        outputs = self.outputs
        status = str(reply.get("status", "ok"))
        if status == "error" and not any(o.kind == "error" for o in outputs):
            # The kernel sent the error only in the reply (no iopub error message).
            info = KernelErrorInfo(
                str(reply.get("ename", "")),
                str(reply.get("evalue", "")),
                list(reply.get("traceback", [])),
            )
            outputs = [*outputs, OutputEvent("error", error=info)]
        return ExecutionResult(
            status=status,
            outputs=outputs,
            execution_count=reply.get("execution_count"),
            duration=time.monotonic() - self._started,
            truncated=self.truncated,
        )


def _output_size(event: OutputEvent) -> int:
    """What an output costs against ``max_output_bytes``: characters of its text, traceback
    and MIME values (bytes, for ASCII)."""
    if event.error is not None:
        error = event.error
        return len(error.ename) + len(error.evalue) + sum(len(line) for line in error.traceback)
    data = sum(
        len(value) if isinstance(value, (str, bytes)) else len(json.dumps(value, default=str))
        for value in event.data.values()
    )
    return len(event.text) + data


def _output_event(msg_type: str | None, content: dict[str, Any]) -> OutputEvent | None:
    if msg_type == "stream":
        text = str(content.get("text", ""))
        if content.get("name") == "stderr":
            return OutputEvent("stderr", text=text)
        return OutputEvent("stdout", text=text)
    if msg_type in ("display_data", "update_display_data"):
        return OutputEvent("display", data=dict(content.get("data", {})))
    if msg_type == "execute_result":
        return OutputEvent("result", data=dict(content.get("data", {})))
    if msg_type == "error":
        info = KernelErrorInfo(
            str(content.get("ename", "")),
            str(content.get("evalue", "")),
            list(content.get("traceback", [])),
        )
        return OutputEvent("error", error=info)
    return None


# --- flows -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelRef:
    """Where a started kernel lives on the gateway."""

    gateway_http: str
    gateway_ws: str
    kernel_id: str
    session_id: str


def start_flow(config: GatewayConfig) -> Flow:
    """Ask the gateway for a kernel; retry connection failures and 5xx; return its id."""
    request = Http(
        "POST", kernels_url(config.gateway_http), start_kernel_body(config), config.startup_timeout
    )
    delays = retry_delays(config.max_retries, config.retry_delay)
    while True:
        try:
            response = yield request
        except TransportError as exc:
            failure: Exception = exc
        else:
            if response.status < 300:
                return str(json.loads(response.text)["id"])
            failure = error_for_status(response.status, response.text, "start a kernel")
            if isinstance(failure, (KernelLimitError, EgressRefusedError)):
                # A limit even as a 429: backing off for seconds frees no kernel.
                raise failure
            specs = yield from _get_or_none(kernelspecs_url(config.gateway_http))
            unknown = specs and unknown_kernel_name(config.kernel_name, specs.text, response.status)
            if unknown:
                raise unknown
            if not is_retryable_status(response.status):
                raise failure
        delay = next(delays, None)
        if delay is None:
            raise failure
        yield Sleep(delay)


def connect_flow(ref: KernelRef, config: GatewayConfig) -> Flow:
    """Open the kernel's websocket and wait until the kernel answers a ``kernel_info_request``.

    Returns the connection's :class:`Codec` and the kernel_info reply.  Used to connect after a
    start and to reconnect after the connection dropped.

    A refused connection, or one the gateway closes while the kernel is still starting (it
    does so when its own kernel_info wait expires), is retried with backoff; a kernel the
    gateway no longer has is :class:`KernelDiedError` at once.  An unanswered
    ``kernel_info_request`` is re-sent at growing intervals: jupyter_server 1.x (Enterprise
    Gateway 3.3) swallows shell replies that arrive while it is still "nudging" a new
    connection, so the first request's reply can be lost on a busy gateway.
    """
    url = channels_url(ref.gateway_ws, ref.kernel_id, ref.session_id)
    username, startup_timeout = config.username, config.startup_timeout
    delays = retry_delays(config.max_retries, config.retry_delay)
    deadline = time.monotonic() + startup_timeout
    while True:
        # Each attempt gets what is left of startup_timeout, not all of it: a gateway that takes
        # the upgrade and never answers it must not hold a start for (retries + 1) timeouts.
        remaining = max(deadline - time.monotonic(), MIN_CONNECT_TIMEOUT)
        try:
            codec = codec_for((yield Connect(url, timeout=remaining)))
            request = kernel_info_request(session_id=ref.session_id, username=username)
            collector = ExecutionCollector(
                request["header"]["msg_id"], reply_type="kernel_info_reply", wait_for_idle=False
            )
            resend_at, interval = time.monotonic(), KERNEL_INFO_RESEND
            while not collector.done:
                now = time.monotonic()
                if now >= deadline:
                    raise StartupTimeoutError(f"kernel did not answer within {startup_timeout:g} s")
                if now >= resend_at:
                    collector.msg_ids.add(request["header"]["msg_id"])
                    yield Send(codec.encode(request))
                    request = kernel_info_request(session_id=ref.session_id, username=username)
                    resend_at, interval = now + interval, min(interval * 2, LIVENESS_INTERVAL)
                yield from _receive_one(ref, collector, min(deadline, resend_at) - now)
            return codec, collector.reply
        except TransportError as exc:
            if (yield from _kernel_gone(ref)):
                raise KernelDiedError("the kernel is gone from the gateway") from None
            delay = next(delays, None)
            if delay is None:
                raise
            if time.monotonic() + delay >= deadline:
                raise StartupTimeoutError(
                    f"the kernel's websocket did not open within {startup_timeout:g} s: {exc}"
                ) from exc
            yield Sleep(delay)


def execute_flow(
    ref: KernelRef, codec: Codec, request: Message, collector: ExecutionCollector, timeout: float
) -> Flow:
    """Send ``request`` and collect its answer; interrupt the kernel if ``timeout`` expires."""
    yield Send(codec.encode(request))
    deadline = time.monotonic() + timeout
    while not collector.done:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            yield from interrupt_flow(ref)
            grace_deadline = time.monotonic() + INTERRUPT_GRACE
            while not collector.done and (left := grace_deadline - time.monotonic()) > 0:
                yield from _receive_one(ref, collector, left)
            if not collector.done:
                raise ExecutionTimeoutError(
                    f"execution did not finish within {timeout:g} s; the kernel was interrupted"
                    f" but is still busy {INTERRUPT_GRACE:g} s later (its kernel does not"
                    " interrupt this code): later executions wait for it; shut the session down"
                    " if it never ends",
                    stopped=False,
                )
            raise ExecutionTimeoutError(
                f"execution did not finish within {timeout:g} s; the kernel was interrupted"
            )
        yield from _receive_one(ref, collector, min(remaining, LIVENESS_INTERVAL))
    return collector.result()


def interrupt_flow(ref: KernelRef) -> Flow:
    response = yield Http("POST", kernels_url(ref.gateway_http, ref.kernel_id, "interrupt"))
    if response.status >= 300 and response.status != 404:
        raise error_for_status(response.status, response.text, "interrupt the kernel")


def kernel_state_flow(ref: KernelRef, timeout: float | None = None) -> Flow:
    """The kernel's ``execution_state`` on the gateway, or ``None`` if the gateway lost it."""
    model = yield from kernel_model_flow(ref.gateway_http, ref.kernel_id, timeout)
    if model is None:
        return None
    return str(model.get("execution_state", "unknown"))


def kernel_model_flow(gateway_http: str, kernel_id: str, timeout: float | None = None) -> Flow:
    """The gateway's model of one kernel (``id``, ``name``, ``execution_state``,
    ``last_activity``, ``connections``), ``{}`` if unreadable, or ``None`` if there is no such
    kernel."""
    url = kernels_url(gateway_http, kernel_id)
    response = yield Http("GET", url, timeout=timeout)
    if response.status == 404 and _json_object(response.text) is not None:
        return None
    if response.status >= 300:
        # A 404 that is not the gateway's JSON comes from a proxy in front of it with no route
        # to it right now (an ingress while the gateway's pod is replaced): it says nothing
        # about the kernel.
        raise error_for_status(response.status, response.text, f"answer GET {url}")
    return _json_object(response.text) or {}


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def list_kernels_flow(gateway_http: str) -> Flow:
    """The models of every kernel on the gateway (needs ``EG_LIST_KERNELS`` on the gateway)."""
    url = kernels_url(gateway_http)
    response = yield Http("GET", url)
    if response.status >= 300:
        raise error_for_status(response.status, response.text, f"answer GET {url}")
    try:
        models = json.loads(response.text)
    except ValueError as exc:
        raise GatewayError(f"GET {url} did not answer JSON: {response.text[:200]!r}") from exc
    if not isinstance(models, list):
        raise GatewayError(f"GET {url} did not answer a list")
    return [m for m in models if isinstance(m, dict)]


def shutdown_flow(ref: KernelRef) -> Flow:
    response = yield Http("DELETE", kernels_url(ref.gateway_http, ref.kernel_id))
    if response.status >= 300 and response.status != 404:
        raise error_for_status(response.status, response.text, "shut the kernel down")


def _get_or_none(url: str, timeout: float | None = None) -> Flow:
    response = yield Http("GET", url, timeout=timeout)
    if response.status == 404:
        return None
    if response.status >= 300:
        raise error_for_status(response.status, response.text, f"answer GET {url}")
    return response


def _kernel_gone(ref: KernelRef) -> Flow:
    """Whether the gateway says the kernel is gone; ``False`` if it cannot tell right now."""
    try:
        state = yield from kernel_state_flow(ref, LOST_CHECK_TIMEOUT)
    except (TransportError, GatewayError):
        return False
    return state is None or state == "dead"


def _receive_one(ref: KernelRef, collector: ExecutionCollector, timeout: float) -> Flow:
    message = yield Receive(timeout)
    if message is None:
        # Silence: make sure there is still a kernel to wait for.
        state = yield from kernel_state_flow(ref)
        if state is None or state == "dead":
            raise KernelDiedError("the kernel is gone from the gateway")
        return
    if message is CLOSED:
        if (yield from _kernel_gone(ref)):
            raise KernelDiedError("the kernel died and the gateway closed its connection")
        raise ConnectionLostError(
            "the connection to the kernel was lost during the request; "
            "the session reconnects on its next use"
        )
    lost = kernel_lost(message)
    if lost is not None:
        raise KernelDiedError(f"the kernel died during the request (gateway reported {lost!r})")
    collector.feed(message)


def oversized_message(limit: int, size: int | None = None) -> TransportError:
    """The error for a kernel message above ``max_message_bytes`` (refused unread)."""
    of = f" of {size} bytes" if size is not None else ""
    return TransportError(
        f"the kernel sent a message{of}, more than max_message_bytes ({limit}); it was refused "
        "unread and the connection closed; the session reconnects on its next use"
    )


# --- gateway REST --------------------------------------------------------------------------


def start_kernel_body(config: GatewayConfig) -> dict[str, Any]:
    """The body of ``POST /api/kernels``: the kernel name and its environment, with
    ``KERNEL_USERNAME`` always set."""
    env: Mapping[str, str] = config.launch_env
    return {"name": config.kernel_name, "env": {**env, "KERNEL_USERNAME": config.username}}


def kernels_url(gateway_http: str, kernel_id: str | None = None, action: str = "") -> str:
    url = gateway_http.rstrip("/") + "/api/kernels"
    if kernel_id is not None:
        url += "/" + quote(kernel_id, safe="")
    return url + (f"/{action}" if action else "")


def kernelspecs_url(gateway_http: str) -> str:
    return gateway_http.rstrip("/") + "/api/kernelspecs"


def channels_url(gateway_ws: str, kernel_id: str, session_id: str) -> str:
    return (
        gateway_ws.rstrip("/")
        + f"/api/kernels/{quote(kernel_id, safe='')}/channels?session_id={session_id}"
    )


def retry_delays(max_retries: int, retry_delay: float) -> Iterator[float]:
    """Exponential backoff: ``retry_delay``, twice that, … capped, ``max_retries`` times."""
    for attempt in range(max_retries):
        yield min(retry_delay * (2**attempt), MAX_RETRY_DELAY)


def gateway_reason(body: str) -> str:
    """The human part of a gateway error body (never its server-side traceback)."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:500]
    if not isinstance(data, dict):
        return str(data)[:500]
    parts = [str(data.get(k)) for k in ("reason", "message") if data.get(k)]
    return ": ".join(dict.fromkeys(parts)) or "no reason given"


def is_retryable_status(status: int) -> bool:
    return status >= 500 or status == 429


def error_for_status(status: int, body: str, what: str) -> GatewayError:
    message = f"gateway refused to {what}: HTTP {status}: {gateway_reason(body)}"
    limit = kernel_limit_error(status, body, message)
    if limit is not None:
        return limit
    egress = egress_refused_error(status, body, message)
    if egress is not None:
        return egress
    if status == 401:
        return AuthenticationError(message, status_code=status)
    cls = GatewayRefusedError if 400 <= status < 500 else GatewayError
    return cls(message, status_code=status)


def kernel_limit_error(status: int, body: str, message: str) -> KernelLimitError | None:
    """A :class:`KernelLimitError` if the answer says a kernel limit is reached, else ``None``.

    This project's gateway answers 403 with a ``kernel_limit`` object (``scope``, ``limit``,
    ``in_use``, ``user``; for the scope ``memory``, the host's available and reserved bytes).
    Stock Enterprise Gateway answers its own ``max_kernels`` and ``max_kernels_per_user`` with a
    403 too, told apart only by its wording.
    """
    data = _json_object(body) if status in (403, 429) else None
    if data is None:
        return None
    figures = data.get("kernel_limit")
    if isinstance(figures, dict):
        user = figures.get("user")
        return KernelLimitError(
            message,
            status_code=status,
            scope=figures["scope"] if figures.get("scope") in ("user", "memory") else "total",
            limit=_int_or_none(figures.get("limit")),
            in_use=_int_or_none(figures.get("in_use")),
            user=user if isinstance(user, str) else None,
        )
    text = f"{data.get('reason', '')} {data.get('message', '')}"
    if "max kernels per user limit" in text:
        return KernelLimitError(message, status_code=status, scope="user")
    if "max kernels limit" in text or data.get("message") == "Resource Limit":
        return KernelLimitError(message, status_code=status, scope="total")
    return None


def egress_refused_error(status: int, body: str, message: str) -> EgressRefusedError | None:
    """An :class:`EgressRefusedError` if the answer is this project's gateway refusing the
    egress a start asked for (a 403 with an ``egress_refused`` object), else ``None``."""
    data = _json_object(body) if status == 403 else None
    figures = data.get("egress_refused") if data is not None else None
    if not isinstance(figures, dict):
        return None
    requested, ceiling = figures.get("requested"), figures.get("ceiling")
    return EgressRefusedError(
        message,
        status_code=status,
        requested=requested if isinstance(requested, str) else "",
        ceiling=ceiling if isinstance(ceiling, str) else "",
    )


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def unknown_kernel_name(
    kernel_name: str, specs_body: str, status: int
) -> UnknownKernelNameError | None:
    """An error if the gateway's kernelspec listing lacks ``kernel_name``, else ``None``.

    Enterprise Gateway 3.3 answers an unknown name with a 500, which would otherwise be
    retried: the listing tells the two apart.
    """
    try:
        specs = json.loads(specs_body).get("kernelspecs", {})
    except (ValueError, AttributeError):
        return None
    if not isinstance(specs, dict) or kernel_name in specs:
        return None
    return UnknownKernelNameError(kernel_name, list(specs), status_code=status)
