"""The protocol core on recorded message sequences, driven without any I/O."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

import pytest

from jupyter_kernel_client import (
    ConnectionLostError,
    EgressRefusedError,
    ExecutionError,
    ExecutionTimeoutError,
    GatewayConfig,
    GatewayError,
    GatewayRefusedError,
    KernelDiedError,
    KernelLimitError,
    OutputEvent,
    TransportError,
    UnknownKernelNameError,
)
from jupyter_kernel_client import _protocol as tuning  # timing constants, shortened by tests
from jupyter_kernel_client import protocol as proto

REF = proto.KernelRef("http://gw", "ws://gw", "k-1", "sess")
CONFIG = GatewayConfig("http://gw", startup_timeout=30, max_retries=3, retry_delay=1.0)


def msg(parent: str, msg_type: str, content: dict[str, Any], channel: str = "iopub") -> str:
    return json.dumps(
        {
            # Only the header names the type, as in the v1 wire form.
            "header": {"msg_id": "x", "msg_type": msg_type},
            "parent_header": {"msg_id": parent} if parent else {},
            "content": content,
            "channel": channel,
        }
    )


def status(parent: str, state: str) -> str:
    return msg(parent, "status", {"execution_state": state})


def reply(parent: str, **content: Any) -> str:
    return msg(parent, "execute_reply", {"status": "ok", "execution_count": 1, **content}, "shell")


class Script:
    """Performs a flow's actions from canned outcomes, recording what the flow asked for."""

    def __init__(self, frames: list[Any], http: Callable[[proto.Http], Any] | None = None):
        self.frames = list(frames)
        self.http = http or (lambda action: proto.Response(200, '{"execution_state": "busy"}'))
        self.actions: list[Any] = []

    def run(self, flow: proto.Flow) -> Any:
        return proto.run_flow(flow, self.recorded)

    def recorded(self, action: proto.Action) -> Any:
        self.actions.append(action)
        result = self.perform(action)
        if isinstance(result, Exception):
            raise result
        return result

    def perform(self, action: proto.Action) -> Any:
        """The outcome of one action, or an exception to throw into the flow."""
        if isinstance(action, proto.Receive):
            # The session decodes what it receives with the connection's codec.
            frame = self.frames.pop(0) if self.frames else None
            return proto.JSON_CODEC.decode(frame) if isinstance(frame, str) else frame
        if isinstance(action, proto.Http):
            return self.http(action)
        return None


def execute(frames: list[Any], timeout: float = 5, **kwargs: Any) -> tuple[Any, Script, str]:
    request = proto.execute_request("1+1", session_id="sess", username="u")
    mid = request["header"]["msg_id"]
    collector = proto.ExecutionCollector(mid, **kwargs)
    script = Script([f.replace("MID", mid) if isinstance(f, str) else f for f in frames])
    return (
        script.run(proto.execute_flow(REF, proto.JSON_CODEC, request, collector, timeout)),
        script,
        mid,
    )


def test_reply_before_idle_and_idle_before_reply_both_complete() -> None:
    for frames in (
        [
            status("MID", "busy"),
            reply("MID"),
            msg("MID", "stream", {"name": "stdout", "text": "a"}),
            status("MID", "idle"),
        ],
        [
            status("MID", "busy"),
            msg("MID", "stream", {"name": "stdout", "text": "a"}),
            status("MID", "idle"),
            reply("MID"),
        ],
    ):
        result, _, _ = execute(frames)
        assert result.stdout == "a"
        assert result.ok


def test_foreign_parent_ids_are_ignored() -> None:
    frames = [
        status("other", "idle"),
        msg("other", "stream", {"name": "stdout", "text": "not mine"}),
        reply("other"),
        msg("MID", "execute_result", {"data": {"text/plain": "2"}, "execution_count": 1}),
        msg("", "stream", {"name": "stdout", "text": "no parent"}),
        status("MID", "idle"),
        reply("MID"),
    ]
    result, _, _ = execute(frames)
    assert str(result) == "2"
    assert result.stdout == ""


def test_missing_idle_means_not_done_and_times_out_with_interrupt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tuning, "INTERRUPT_GRACE", 0.05)
    # Reply but never idle: the flow must keep waiting, then interrupt at the deadline.
    result_frames = [reply("MID")]
    with pytest.raises(ExecutionTimeoutError):
        execute(result_frames, timeout=0.05)
    request = proto.execute_request("x", session_id="s", username="u")
    collector = proto.ExecutionCollector(request["header"]["msg_id"])
    script = Script([])
    with pytest.raises(ExecutionTimeoutError) as late:
        script.run(proto.execute_flow(REF, proto.JSON_CODEC, request, collector, 0.01))
    urls = [a.url for a in script.actions if isinstance(a, proto.Http)]
    assert "http://gw/api/kernels/k-1/interrupt" in urls
    # Still busy after the grace period: said so, never waited on.
    assert late.value.stopped is False and "still busy" in str(late.value)


def test_kernel_restart_notice_raises_kernel_died() -> None:
    with pytest.raises(KernelDiedError, match="restarting"):
        execute([status("MID", "busy"), status("", "restarting")])


@pytest.mark.parametrize(
    ("gateway", "error"),
    [
        (lambda a: proto.Response(404, "{}"), KernelDiedError),
        (lambda a: proto.Response(200, '{"execution_state":"dead"}'), KernelDiedError),
        (lambda a: proto.Response(200, '{"execution_state":"busy"}'), ConnectionLostError),
        (lambda a: TransportError("gateway restarting"), ConnectionLostError),
        (lambda a: proto.Response(502, "{}"), ConnectionLostError),
    ],
)
def test_closed_socket_is_kernel_died_if_the_kernel_is_gone_else_connection_lost(
    gateway: Callable[[proto.Http], Any], error: type[Exception]
) -> None:
    request = proto.execute_request("x", session_id="s", username="u")
    script = Script([proto.CLOSED], http=gateway)
    with pytest.raises(error):
        script.run(
            proto.execute_flow(REF, proto.JSON_CODEC, request, proto.ExecutionCollector("m"), 60)
        )
    # One quick question to the gateway, not a wait for the execution's timeout.
    (check,) = [a for a in script.actions if isinstance(a, proto.Http)]
    assert check.method == "GET" and check.timeout is not None and check.timeout <= 5


def test_silence_checks_the_kernel_and_reports_death() -> None:
    request = proto.execute_request("x", session_id="s", username="u")
    script = Script([None], http=lambda a: proto.Response(404, "{}"))
    with pytest.raises(KernelDiedError, match="gone"):
        script.run(
            proto.execute_flow(REF, proto.JSON_CODEC, request, proto.ExecutionCollector("m"), 5)
        )
    assert isinstance(script.actions[-1], proto.Http)
    assert script.actions[-1].method == "GET"


def test_every_kind_of_output_is_assembled_in_order() -> None:
    png = "iVBORw0KGgo="
    frames = [
        msg("MID", "stream", {"name": "stdout", "text": "out\n"}),
        msg("MID", "stream", {"name": "stderr", "text": "err\n"}),
        msg("MID", "display_data", {"data": {"image/png": png, "text/plain": "<Image>"}}),
        msg("MID", "execute_result", {"data": {"text/plain": "42"}, "execution_count": 3}),
        msg("MID", "error", {"ename": "E", "evalue": "v", "traceback": ["\x1b[31mTB\x1b[0m"]}),
        reply("MID", status="error", execution_count=3, ename="E", evalue="v"),
        status("MID", "idle"),
    ]
    events: list[OutputEvent] = []
    result, _, _ = execute(frames, on_output=events.append)
    assert [e.kind for e in events] == ["stdout", "stderr", "display", "result", "error"]
    assert result.stdout == "out\n" and result.stderr == "err\n"
    assert result.execute_result == {"text/plain": "42"}
    assert result.images == [b"\x89PNG\r\n\x1a\n"]
    assert result.execution_count == 3
    assert result.error is not None and result.error.plain_traceback() == "TB"
    assert str(result) == "out\nerr\n<Image>\n42\nTB"
    with pytest.raises(ExecutionError, match="E: v"):
        result.raise_for_error()


def test_error_only_in_reply_is_still_reported() -> None:
    result, _, _ = execute(
        [
            reply("MID", status="error", ename="KeyError", evalue="'k'", traceback=[]),
            status("MID", "idle"),
        ]
    )
    assert result.error is not None and result.error.ename == "KeyError"


def test_clear_output_drops_earlier_outputs() -> None:
    frames = [
        msg("MID", "stream", {"name": "stdout", "text": "old"}),
        msg("MID", "clear_output", {"wait": True}),
        msg("MID", "stream", {"name": "stdout", "text": "new"}),
        reply("MID"),
        status("MID", "idle"),
    ]
    result, _, _ = execute(frames)
    assert result.stdout == "new"


def test_binary_frame_decodes_with_buffers() -> None:
    body = json.dumps({"msg_type": "comm_msg", "parent_header": {}, "content": {}}).encode()
    buffers = [b"\x00\x01", b"xyz"]
    offsets = [4 * 4]
    for part in (body, buffers[0]):
        offsets.append(offsets[-1] + len(part))
    frame = struct.pack("!4I", 3, *offsets) + body + b"".join(buffers)
    decoded = proto.JSON_CODEC.decode(frame)
    assert decoded["msg_type"] == "comm_msg"
    assert decoded["buffers"] == buffers


def test_v1_frames_round_trip_with_buffers_and_unicode() -> None:
    message = proto.execute_request("print('ünï ✓')", session_id="s", username="u")
    message["buffers"] = [b"\x00\xff", b""]
    frame = proto.V1_CODEC.encode(message)
    count = int.from_bytes(frame[:8], "little")
    assert count == 8  # channel, header, parent, metadata, content, 2 buffers, end
    decoded = proto.V1_CODEC.decode(frame)
    for key in ("channel", "header", "parent_header", "metadata", "content", "buffers"):
        assert decoded[key] == message[key], key


def test_v1_frame_layout_matches_jupyter_server() -> None:
    # Built by hand per jupyter_server's serialize_msg_to_ws_v1: count, offsets, parts.
    parts = [b"iopub", b'{"msg_type":"status"}', b'{"msg_id":"p"}', b"{}", b'{"x":1}']
    offsets = [8 * (len(parts) + 2)]
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    frame = b"".join(n.to_bytes(8, "little") for n in (len(offsets), *offsets)) + b"".join(parts)
    decoded = proto.V1_CODEC.decode(frame)
    assert decoded["channel"] == "iopub"
    assert proto.parent_id(decoded) == "p"
    assert decoded["content"] == {"x": 1} and decoded["buffers"] == []
    assert proto.V1_CODEC.encode(decoded) == frame


@pytest.mark.parametrize("frame", [b"", b"\x01" + b"\x00" * 7, b"\xff" * 64])
def test_malformed_v1_frames_are_refused(frame: bytes) -> None:
    with pytest.raises(ValueError):
        proto.V1_CODEC.decode(frame)


def test_codec_follows_the_selected_subprotocol() -> None:
    assert proto.codec_for(proto.WS_SUBPROTOCOL) is proto.V1_CODEC
    assert proto.codec_for(None) is proto.JSON_CODEC
    assert proto.codec_for("something-else") is proto.JSON_CODEC


def test_execute_request_dedents_indented_blocks() -> None:
    code = "\n        with open('f') as f:\n            f.write('x')\n    "
    request = proto.execute_request(code, session_id="s", username="u")
    lines = request["content"]["code"].splitlines()
    assert lines[1:3] == ["with open('f') as f:", "    f.write('x')"]


def start(http: Callable[[proto.Http], Any], max_retries: int = 3) -> tuple[Any, Script]:
    script = Script([], http=http)
    flow = proto.start_flow(CONFIG.replace(startup_timeout=5, max_retries=max_retries))
    return script.run(flow), script


def test_start_retries_connection_errors_and_5xx_then_succeeds() -> None:
    answers: list[Any] = [
        TransportError("refused"),
        proto.Response(503, "{}"),
        proto.Response(201, '{"id": "abc"}'),
    ]
    specs = proto.Response(200, '{"kernelspecs": {"python3": {}}}')
    kernel_id, script = start(lambda a: specs if "kernelspecs" in a.url else answers.pop(0))
    assert kernel_id == "abc"
    assert [a.seconds for a in script.actions if isinstance(a, proto.Sleep)] == [1.0, 2.0]


def test_start_gives_up_after_max_retries() -> None:
    script = Script([], http=lambda a: TransportError("refused"))
    with pytest.raises(TransportError):
        script.run(proto.start_flow(CONFIG.replace(max_retries=2, retry_delay=0.5)))
    posts = [a for a in script.actions if isinstance(a, proto.Http)]
    assert len(posts) == 3


def test_4xx_fails_at_once_with_the_gateway_reason() -> None:
    def http(action: proto.Http) -> Any:
        if "kernelspecs" in action.url:
            return proto.Response(200, '{"kernelspecs": {"python3": {}}}')
        return proto.Response(403, '{"reason": "User root is not authorized", "message": ""}')

    with pytest.raises(GatewayRefusedError, match="User root is not authorized") as info:
        start(http)
    assert info.value.status_code == 403
    assert not isinstance(info.value, KernelLimitError)  # a 403 of another kind


LIMIT_BODY = json.dumps(
    {
        "reason": "per-user kernel limit reached: 2 of 2 kernels in use for user 'alice'",
        "message": "shut a kernel down (idle kernels are also culled) and try again",
        "kernel_limit": {"scope": "user", "limit": 2, "in_use": 2, "user": "alice"},
    }
)


@pytest.mark.parametrize("status", [403, 429])
def test_kernel_limit_fails_at_once_as_its_own_error(status: int) -> None:
    # 429 is otherwise retried: a kernel limit is not, whatever status the gateway picked.
    script = Script([], http=lambda a: proto.Response(status, LIMIT_BODY))
    flow = proto.start_flow(CONFIG)
    with pytest.raises(KernelLimitError, match="2 of 2 kernels in use for user 'alice'") as info:
        script.run(flow)
    error = info.value
    assert isinstance(error, GatewayRefusedError) and error.status_code == status
    assert (error.scope, error.limit, error.in_use, error.user) == ("user", 2, 2, "alice")
    assert [a.url for a in script.actions] == ["http://gw/api/kernels"]  # one POST, no retry


def test_a_host_short_of_memory_is_a_kernel_limit_of_scope_memory() -> None:
    body = {
        "reason": "host memory low: 900 MiB available, below the 1228 MiB kept in reserve",
        "message": "shut a kernel down (idle kernels are also culled) and try again",
        "kernel_limit": {"scope": "memory", "available_bytes": 9, "reserve_bytes": 12},
    }
    script = Script([], http=lambda a: proto.Response(403, json.dumps(body)))
    with pytest.raises(KernelLimitError, match="host memory low") as info:
        script.run(proto.start_flow(CONFIG))
    assert (info.value.scope, info.value.limit, info.value.in_use) == ("memory", None, None)
    assert len(script.actions) == 1  # not retried


@pytest.mark.parametrize(
    ("message", "scope"),
    [
        # Stock Enterprise Gateway's own limits (EG_MAX_KERNELS, EG_MAX_KERNELS_PER_USER).
        (
            "A max kernels limit has been set to 2 and there are currently 2 active and pending "
            "kernels.",
            "total",
        ),
        (
            "A max kernels per user limit has been set to 1 and user 'bob' currently has 1 active "
            "and pending kernel.",
            "user",
        ),
        ("Resource Limit", "total"),
    ],
)
def test_stock_gateway_limits_are_recognised(message: str, scope: str) -> None:
    body = json.dumps({"reason": "Forbidden", "message": message})
    error = proto.error_for_status(403, body, "start a kernel")
    assert isinstance(error, KernelLimitError) and error.scope == scope
    assert error.limit is None and error.user is None
    # The same words with another status, or no limit at all, are no kernel limit.
    assert not isinstance(proto.error_for_status(500, body, "x"), KernelLimitError)
    other = json.dumps({"reason": "Forbidden", "message": "User 'root' is not authorized"})
    assert not isinstance(proto.error_for_status(403, other, "x"), KernelLimitError)


def test_unknown_kernel_name_is_told_apart_from_a_5xx() -> None:
    script = Script(
        [],
        http=lambda a: (
            proto.Response(200, '{"kernelspecs": {"python3": {}}}')
            if "kernelspecs" in a.url
            else proto.Response(500, '{"message": "x", "traceback": "Traceback ..."}')
        ),
    )
    with pytest.raises(UnknownKernelNameError, match=r"'nope'.*python3") as info:
        script.run(proto.start_flow(CONFIG.replace(kernel_name="nope")))
    assert not any(isinstance(a, proto.Sleep) for a in script.actions)
    assert "Traceback" not in str(info.value)


def test_gateway_reason_never_includes_a_traceback() -> None:
    body = '{"reason": "Internal Server Error", "message": "boom", "traceback": "Traceback"}'
    assert proto.gateway_reason(body) == "Internal Server Error: boom"
    assert isinstance(proto.error_for_status(502, body, "x"), GatewayError)
    assert not isinstance(proto.error_for_status(502, body, "x"), GatewayRefusedError)


def test_kernel_username_is_never_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KERNEL_USERNAME", raising=False)
    monkeypatch.setattr("getpass.getuser", lambda: "root")
    assert proto.start_kernel_body(CONFIG)["env"]["KERNEL_USERNAME"] == "jovyan"
    alice = CONFIG.replace(launch_env={"KERNEL_USERNAME": "alice", "KERNEL_X": "1"})
    body = proto.start_kernel_body(alice)
    assert body == {"name": "python3", "env": {"KERNEL_USERNAME": "alice", "KERNEL_X": "1"}}
    with pytest.raises(TypeError, match="KERNEL_X"):
        CONFIG.replace(launch_env={"KERNEL_X": 1})


def test_unanswered_kernel_info_request_is_resent_and_any_reply_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The gateway swallowed the reply to the first request (jupyter_server's connect "nudge").
    monkeypatch.setattr(tuning, "KERNEL_INFO_RESEND", 0.01)
    sent: list[str] = []

    class Handshake(Script):
        def perform(self, action: proto.Action) -> Any:
            if isinstance(action, proto.Connect):
                return proto.WS_SUBPROTOCOL
            if isinstance(action, proto.Send):
                sent.append(proto.V1_CODEC.decode(action.frame)["header"]["msg_id"])
            elif isinstance(action, proto.Receive) and len(sent) >= 2:
                reply = msg(sent[1], "kernel_info_reply", {"status": "ok"}, "shell")
                return proto.JSON_CODEC.decode(reply)  # the first reply never comes
            elif isinstance(action, proto.Http):
                return proto.Response(200, '{"execution_state": "starting"}')
            return None

    codec, info = Handshake([]).run(proto.connect_flow(REF, CONFIG.replace(max_retries=0)))
    assert codec is proto.V1_CODEC and info == {"status": "ok"}
    assert len(sent) == 2 and sent[0] != sent[1]


def test_kernel_gone_during_connect_is_kernel_died_not_retried() -> None:
    class Vanished(Script):
        def perform(self, action: proto.Action) -> Any:
            if isinstance(action, proto.Connect):
                return TransportError("404 on the websocket handshake")
            if isinstance(action, proto.Http):
                return proto.Response(404, '{"reason": "Kernel does not exist"}')
            return None

    script = Vanished([])
    with pytest.raises(KernelDiedError, match="gone"):
        script.run(proto.connect_flow(REF, CONFIG))
    assert not any(isinstance(a, proto.Sleep) for a in script.actions)


def test_a_proxy_s_404_during_connect_is_no_news_of_the_kernel() -> None:
    # An ingress whose backend is being replaced answers its own 404 page ("404 page not
    # found", not the gateway's JSON): the connection is retried, the kernel not given up.
    class Rescheduling(Script):
        def perform(self, action: proto.Action) -> Any:
            if isinstance(action, proto.Connect):
                return TransportError("502 on the websocket handshake")
            if isinstance(action, proto.Http):
                return proto.Response(404, "404 page not found\n")
            return None

    script = Rescheduling([])
    with pytest.raises(TransportError):
        script.run(proto.connect_flow(REF, CONFIG.replace(max_retries=2)))
    assert [a.seconds for a in script.actions if isinstance(a, proto.Sleep)] == [1.0, 2.0]


def test_gateway_down_during_connect_is_still_retried() -> None:
    class Down(Script):
        def perform(self, action: proto.Action) -> Any:
            if isinstance(action, (proto.Connect, proto.Http)):
                return TransportError("connection refused")
            return None

    script = Down([])
    with pytest.raises(TransportError):
        script.run(proto.connect_flow(REF, CONFIG.replace(max_retries=2)))
    assert [a.seconds for a in script.actions if isinstance(a, proto.Sleep)] == [1.0, 2.0]


# --- bounded output ------------------------------------------------------------------------------


def stream(text: str, name: str = "stdout") -> str:
    return msg("MID", "stream", {"name": name, "text": text})


def test_output_past_the_limit_is_dropped_and_the_result_says_so() -> None:
    seen: list[OutputEvent] = []
    frames = [
        stream("a" * 6),
        stream("b" * 6),  # 2 of these 6 fit
        msg("MID", "display_data", {"data": {"text/plain": "dropped"}}),
        stream("c"),  # nothing after the cut, even what would fit
        reply("MID"),
        status("MID", "idle"),
    ]
    result, _, _ = execute(frames, max_output_bytes=8, on_output=seen.append)
    assert result.truncated
    assert result.stdout == "a" * 6 + "bb"
    assert str(result).startswith("aaaaaabb\n[output truncated")
    assert [e.kind for e in seen] == ["stdout", "stdout", "display", "stdout"]  # all streamed


def test_output_within_the_limit_is_untouched() -> None:
    frames = [stream("x" * 8), reply("MID"), status("MID", "idle")]
    result, _, _ = execute(frames, max_output_bytes=8)
    assert not result.truncated and str(result) == "x" * 8


def test_an_error_past_the_limit_still_comes_from_the_reply() -> None:
    frames = [
        stream("x" * 10),
        msg("MID", "error", {"ename": "ValueError", "evalue": "v", "traceback": ["tb"]}),
        reply("MID", status="error", ename="ValueError", evalue="v", traceback=["tb"]),
        status("MID", "idle"),
    ]
    result, _, _ = execute(frames, max_output_bytes=4)
    assert result.truncated and result.stdout == "xxxx"
    assert result.error is not None and result.error.ename == "ValueError"


def test_clear_output_frees_the_budget() -> None:
    frames = [
        stream("old-old"),
        msg("MID", "clear_output", {"wait": False}),
        stream("new-new"),
        reply("MID"),
        status("MID", "idle"),
    ]
    result, _, _ = execute(frames, max_output_bytes=8)
    assert result.stdout == "new-new" and not result.truncated


# --- messages the gateway cut (above its SANDBOX_MAX_MESSAGE_BYTES) -----------------------------

GATEWAY_NOTICE = "[sandbox gateway: a kernel message (stream) of 9 bytes was more than ...]\n"


def cut(parent: str, msg_type: str, content: dict[str, Any], kept: Any) -> str:
    """A message as this project's gateway rewrites one above its limit: marked in metadata."""
    message = json.loads(msg(parent, msg_type, content))
    mark = {"msg_type": msg_type, "bytes": 9, "limit": 4, "kept": kept}
    message["metadata"] = {"sandbox_truncated": mark}
    return json.dumps(message)


def test_a_stream_the_gateway_cut_keeps_the_kernels_text_and_says_truncated() -> None:
    seen: list[OutputEvent] = []
    frames = [
        stream("before "),
        cut("MID", "stream", {"name": "stdout", "text": "xxxx\n" + GATEWAY_NOTICE}, 4),
        stream(" after"),
        reply("MID"),
        status("MID", "idle"),
    ]
    result, _, _ = execute(frames, on_output=seen.append)
    assert result.truncated and result.ok
    assert result.stdout == "before xxxx after"  # the notice is the gateway's, not output
    assert [e.text for e in seen] == ["before ", "xxxx", " after"]
    assert str(result).endswith(
        "\n[output truncated: more than max_output_bytes or the gateway's "
        "message limit; the rest was dropped]"
    )


def test_a_notice_for_a_dropped_output_is_no_output() -> None:
    seen: list[OutputEvent] = []
    frames = [
        cut("MID", "stream", {"name": "stderr", "text": GATEWAY_NOTICE}, 0),
        cut("MID", "stream", {"name": "stderr", "text": GATEWAY_NOTICE}, "junk"),  # as 0
        reply("MID"),
        status("MID", "idle"),
    ]
    result, _, _ = execute(frames, on_output=seen.append)
    assert result.truncated and (result.stdout, result.stderr, seen) == ("", "", [])


def test_a_reply_the_gateway_replaced_completes_the_request_as_an_error() -> None:
    error = {"status": "error", "ename": "MessageTooLarge", "evalue": "[sandbox gateway: ...]"}
    frames = [
        cut("MID", "execute_reply", {**error, "traceback": []}, 0),
        status("MID", "idle"),
    ]
    result, _, _ = execute(frames)
    assert result.truncated and result.status == "error"
    assert result.error is not None and result.error.ename == "MessageTooLarge"


def test_a_mark_on_another_requests_message_changes_nothing() -> None:
    frames = [
        cut("OTHER", "stream", {"name": "stdout", "text": "x" + GATEWAY_NOTICE}, 1),
        stream("mine"),
        reply("MID"),
        status("MID", "idle"),
    ]
    result, _, _ = execute(frames)
    assert not result.truncated and result.stdout == "mine"


# --- runners and performers ----------------------------------------------------------------------


def test_the_async_runner_drives_a_flow_like_the_sync_one() -> None:
    import asyncio

    answers: list[Any] = [TransportError("refused"), proto.Response(201, '{"id": "k"}')]
    performed: list[proto.Action] = []

    async def perform(action: proto.Action) -> Any:
        performed.append(action)
        if isinstance(action, proto.Sleep):
            return None
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    kernel_id = asyncio.run(proto.run_flow_async(proto.start_flow(CONFIG), perform))
    assert kernel_id == "k"
    assert [type(a).__name__ for a in performed] == ["Http", "Sleep", "Http"]


def test_rest_performers_refuse_websocket_actions_and_default_the_timeout() -> None:
    class Http:
        def __init__(self) -> None:
            self.timeouts: list[float] = []

        def request(self, method: str, url: str, json: Any, timeout: float) -> Any:
            self.timeouts.append(timeout)
            return type("R", (), {"status_code": 200, "text": "{}"})()

    http = Http()
    perform = proto.rest_performer(http, request_timeout=7)  # type: ignore[arg-type]
    assert perform(proto.Http("GET", "http://gw/api/kernels")) == proto.Response(200, "{}")
    perform(proto.Http("GET", "http://gw/api/kernels", timeout=2))
    assert http.timeouts == [7, 2]
    with pytest.raises(TypeError, match="Connect"):
        perform(proto.Connect("ws://gw", timeout=1))


def test_egress_beyond_the_ceiling_fails_at_once_as_its_own_error() -> None:
    body = json.dumps(
        {
            "reason": "Forbidden",
            "message": "egress to evil.example:443 is not within this gateway's egress ceiling",
            "egress_refused": {"requested": "evil.example", "ceiling": "pypi.org"},
        }
    )
    script = Script([], http=lambda a: proto.Response(403, body))
    with pytest.raises(EgressRefusedError, match=r"evil\.example:443") as info:
        script.run(proto.start_flow(CONFIG))
    assert isinstance(info.value, GatewayRefusedError) and info.value.status_code == 403
    assert (info.value.requested, info.value.ceiling) == ("evil.example", "pypi.org")
    assert [a.url for a in script.actions] == ["http://gw/api/kernels"]
