"""One kernel message above ``SANDBOX_MAX_MESSAGE_BYTES`` is cut by the gateway, for every client.

A real Enterprise Gateway 3.3 with the sandbox's config (``sandbox_gateway.http.messages``)
and real local kernels that print one huge stream message or display one huge text.  The Python
client gets a truncated result and keeps its session; a raw websocket client, as the notebook's
server is (legacy JSON) or a browser (v1), never receives a frame much larger than the limit.
The rewriting itself is checked on hand-made frames first: it needs no gateway.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import random
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import websocket

from jupyter_kernel_client import (
    AsyncGatewayKernelSession,
    GatewayConfig,
    GatewayKernelSession,
    protocol,
)
from sandbox_gateway.http import messages as sandbox_messages
from testkit.gateway import Gateway

MIB = 1024 * 1024
LIMIT = MIB  # small, so that the tests move little data
ENVELOPE = 64 * 1024  # room for a header, a parent header and the notice
KEY = b"the kernel session's key"
NOTICE = "[sandbox gateway: a kernel message"
# One write of 20 MB: one stream message, whatever the kernel's flush timing.
ONE_WRITE = "import sys\nsys.stdout.write('x' * (20 * (1 << 20)))\nsys.stdout.flush()"
# The finding: 300 x 1 MB between two flushes (one message, or a few if the kernel flushes).
LOOP = "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(300):\n    sys.stdout.write(chunk)\n"
NON_ASCII = "import sys\nsys.stdout.write('€' * (1 << 20))\nsys.stdout.flush()"
HUGE_DISPLAY = (
    "from IPython.display import display\ndisplay({'text/plain': 'y' * (20 * (1 << 20))}, raw=True)"
)


def messages() -> ModuleType:
    """The gateway module itself; its pure parts need no Enterprise Gateway."""
    return sandbox_messages


def sign(parts: list[bytes]) -> bytes:
    digest = hmac.new(KEY, digestmod=hashlib.sha256)
    for part in parts:
        digest.update(part)
    return digest.hexdigest().encode()


def frames(msg_type: str, content: dict[str, Any] | bytes, **extra: bytes) -> list[bytes]:
    """A signed kernel message as the gateway receives it from ZMQ."""
    header = json.dumps({"msg_id": "m-1", "msg_type": msg_type, "session": "s"}).encode()
    parts = [
        extra.get("header", header),
        json.dumps({"msg_id": "request-1", "msg_type": "execute_request"}).encode(),
        extra.get("metadata", b"{}"),
        content if isinstance(content, bytes) else json.dumps(content).encode(),
        *([extra["buffer"]] if "buffer" in extra else []),
    ]
    return [b"kernel.k.iopub", b"<IDS|MSG>", sign(parts), *parts]


def rewritten(frames_in: list[bytes]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Header, metadata and content of the bounded message, after checking its envelope."""
    out = messages().bound_message(frames_in, LIMIT, sign)
    assert out is not None
    assert out[:2] == frames_in[:2]  # routing identities and delimiter kept
    assert out[2] == sign(list(out[3:])), "signed again for the changed content"
    assert out[4] == frames_in[4], "parent header kept: the output lands in the right cell"
    assert len(out) == 7, "buffers dropped"
    assert sum(map(len, out[3:])) <= LIMIT + ENVELOPE
    header, metadata, content = (json.loads(part) for part in (out[3], out[5], out[6]))
    return header, metadata, content


# --- the rewriting, on hand-made frames ----------------------------------------------------------


def test_a_message_within_the_limit_is_passed_on_as_it_is() -> None:
    small = frames("stream", {"name": "stdout", "text": "x" * (LIMIT - 300)})
    assert messages().bound_message(small, LIMIT, sign) is small


def longest_prefix(text: str, limit: int, ensure_ascii: bool) -> str:
    """The longest start of ``text`` whose JSON form (as a kernel wrote it) fits in ``limit``."""
    sizes = (len(json.dumps(c, ensure_ascii=ensure_ascii).encode()) - 2 for c in text)
    fitting = sum(1 for total in itertools.accumulate(sizes) if total <= limit)
    return text[:fitting]


@pytest.mark.parametrize(
    ("text", "ensure_ascii"),
    [
        ("x" * (3 * MIB), False),
        ("€" * MIB, False),  # 3 bytes each: the cut falls inside one
        ("€" * MIB, True),  # the same as \u20ac escapes
        ('ab\n"\\' * MIB, True),  # escapes make the JSON longer than the text
        ("\x01" * MIB, True),  # six bytes of JSON each
        ("😀" * MIB, True),  # surrogate pairs (12 bytes of JSON, 4 of UTF-8)
        ("😀" * MIB, False),
    ],
)
def test_a_stream_is_cut_to_the_limit_on_a_character_boundary(
    text: str, ensure_ascii: bool
) -> None:
    content = json.dumps({"name": "stderr", "text": text}, ensure_ascii=ensure_ascii).encode()
    message = frames("stream", content)
    header, metadata, out = rewritten(message)
    kept = metadata["sandbox_truncated"]["kept"]
    assert header["msg_type"] == "stream" and out["name"] == "stderr"
    assert out["text"][:kept] == longest_prefix(text, LIMIT, ensure_ascii)
    assert kept > 0
    size = sum(map(len, message[2:]))  # all of the message but its routing identities
    assert out["text"][kept:].startswith(f"\n{NOTICE} (stream) of {size} bytes was more than")
    assert out["text"].endswith("the rest of it was dropped]\n")
    assert metadata["sandbox_truncated"]["limit"] == LIMIT


def test_any_text_is_cut_to_its_longest_start_that_fits() -> None:
    rng = random.Random(15)
    alphabet = ["a", "\n", '"', "\\", "/", "é", "€", "😀", "\x01", "\u2028", "\x7f"]
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        ensure_ascii, limit = rng.random() < 0.5, rng.randint(1, 120)
        content = json.dumps({"name": "stdout", "text": text}, ensure_ascii=ensure_ascii)
        message = frames("stream", content.encode())
        out = messages().bound_message(message, limit, sign)
        assert out is not None
        if out is message:
            continue  # the whole message fits
        kept = json.loads(out[5])["sandbox_truncated"]["kept"]
        assert json.loads(out[6])["text"][:kept] == longest_prefix(text, limit, ensure_ascii)


def test_on_a_legacy_connection_the_text_is_measured_as_it_will_be_sent() -> None:
    text = "€" * MIB  # \u20ac in the legacy protocol's JSON: 6 bytes each
    content = json.dumps({"name": "stdout", "text": text}, ensure_ascii=False).encode()
    out = messages().bound_message(frames("stream", content), LIMIT, sign, ascii_json=True)
    assert out is not None
    kept = json.loads(out[5])["sandbox_truncated"]["kept"]
    assert json.loads(out[6])["text"][:kept] == longest_prefix(text, LIMIT, ensure_ascii=True)
    assert len(json.dumps(json.loads(out[6]))) <= LIMIT + ENVELOPE


def test_unpaired_surrogates_become_replacement_characters() -> None:
    content = b'{"name": "stdout", "text": "a\\udc00b\\ud83d' + b"x" * (2 * LIMIT) + b'"}'
    _, _, out = rewritten(frames("stream", content))
    assert out["text"].startswith("a\ufffdb\ufffdxxx")


def test_buffers_and_metadata_count_and_are_dropped() -> None:
    big = frames("stream", {"name": "stdout", "text": "hi"}, buffer=b"\0" * (2 * LIMIT))
    _, metadata, content = rewritten(big)
    assert content["text"].startswith(f"hi\n{NOTICE} (stream)")
    assert metadata["sandbox_truncated"]["kept"] == 2


@pytest.mark.parametrize(
    "content",
    [
        json.dumps({"text": "x" * (2 * MIB), "name": "stdout"}).encode(),  # name after the text
        json.dumps({"name": "elsewhere", "text": "x" * (2 * MIB)}).encode(),
        json.dumps({"name": "stdout", "text": ["x" * (2 * MIB)]}).encode(),
        b'{"name": "stdout", "text": "\\q' + b"x" * (2 * MIB) + b'"}',  # invalid escape
        b"x" * (2 * MIB),
    ],
)
def test_a_stream_of_another_layout_becomes_a_notice_alone(content: bytes) -> None:
    header, metadata, out = rewritten(frames("stream", content))
    assert header["msg_type"] == "stream" and out["name"] == "stderr"
    assert (
        out["text"].startswith(f"{NOTICE} (stream) of ")
        and metadata["sandbox_truncated"]["kept"] == 0
    )


def test_another_output_becomes_a_notice_on_stderr() -> None:
    display = {"data": {"text/plain": "y" * (2 * MIB)}, "metadata": {}}
    header, metadata, content = rewritten(frames("display_data", display))
    assert header["msg_type"] == "stream" and header["msg_id"] == "m-1"
    assert content["name"] == "stderr" and content["text"].startswith(f"{NOTICE} (display_data)")
    assert metadata["sandbox_truncated"]["msg_type"] == "display_data"


def test_a_reply_stays_a_reply_so_that_its_request_completes() -> None:
    header, _, content = rewritten(frames("execute_reply", {"status": "ok", "x": "z" * LIMIT}))
    assert header["msg_type"] == "execute_reply"
    assert (content["status"], content["ename"]) == ("error", "MessageTooLarge")
    assert content["evalue"].startswith(f"{NOTICE} (execute_reply)")


def test_an_input_request_keeps_asking() -> None:
    header, _, content = rewritten(frames("input_request", {"prompt": "?" * (2 * LIMIT)}))
    assert header["msg_type"] == "input_request" and content["prompt"].startswith(NOTICE)


def test_an_echo_of_the_code_and_an_unroutable_message_are_dropped() -> None:
    bound = messages().bound_message
    assert bound(frames("execute_input", {"code": "1" * (2 * LIMIT)}), LIMIT, sign) is None
    huge_header = json.dumps({"msg_type": "stream", "pad": "h" * (2 * LIMIT)}).encode()
    stream = {"name": "stdout", "text": "x"}
    assert bound(frames("stream", stream, header=huge_header), LIMIT, sign) is None
    assert bound(frames("stream", stream, header=b"not json" * LIMIT), LIMIT, sign) is None


def test_the_setting_is_a_size_of_at_least_64k() -> None:
    settings = messages().MessageSettings.from_env
    assert settings({}).max_message_bytes == 16 * MIB
    assert settings({"SANDBOX_MAX_MESSAGE_BYTES": " 1m "}).max_message_bytes == MIB
    assert settings({"SANDBOX_MAX_MESSAGE_BYTES": "65536"}).max_message_bytes == 65536
    for bad, reason in (("lots", "invalid size"), ("1k", "at least 64k"), ("-1m", "invalid")):
        with pytest.raises(ValueError, match=f"SANDBOX_MAX_MESSAGE_BYTES.*{reason}"):
            settings({"SANDBOX_MAX_MESSAGE_BYTES": bad})


def test_a_bad_setting_stops_the_gateway_with_a_clear_message() -> None:
    gateway = Gateway(env={"SANDBOX_MAX_MESSAGE_BYTES": "sixteen"})
    try:
        with pytest.raises(RuntimeError, match="gateway exited early"):
            gateway.start()
        assert "invalid setting: SANDBOX_MAX_MESSAGE_BYTES: invalid size 'sixteen'" in gateway.log()
    finally:
        gateway.stop()


# --- on a real gateway ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bounded_gateway() -> Iterator[Gateway]:
    gw = Gateway(env={"SANDBOX_MAX_MESSAGE_BYTES": "1m"}).start()
    try:
        yield gw
    finally:
        gw.stop()


def test_the_client_gets_the_first_bytes_and_keeps_its_session(bounded_gateway: Gateway) -> None:
    seen: list[str] = []
    config = GatewayConfig(bounded_gateway.http, bounded_gateway.ws)
    with GatewayKernelSession(config) as session:
        result = session.execute(ONE_WRITE, timeout=120, on_output=lambda e: seen.append(e.text))
        assert (result.ok, result.truncated) == (True, True)
        assert result.stdout == "x" * LIMIT and result.stderr == ""
        assert seen == ["x" * LIMIT]  # the callback sees the kernel's text, not the notice
        assert str(result).endswith(
            "x\n[output truncated: more than max_output_bytes or the "
            "gateway's message limit; the rest was dropped]"
        )
        assert str(session.execute("1 + 1")) == "2"


async def test_the_async_client_too(bounded_gateway: Gateway) -> None:
    config = GatewayConfig(bounded_gateway.http, bounded_gateway.ws)
    async with AsyncGatewayKernelSession(config) as session:
        result = await session.execute(ONE_WRITE, timeout=120)
        assert (result.truncated, result.stdout) == (True, "x" * LIMIT)
        assert str(await session.execute("1 + 1")) == "2"


def test_a_huge_display_becomes_a_truncated_result(bounded_gateway: Gateway) -> None:
    config = GatewayConfig(bounded_gateway.http, bounded_gateway.ws)
    with GatewayKernelSession(config) as session:
        result = session.execute(HUGE_DISPLAY, timeout=120)
        assert (result.ok, result.truncated) == (True, True)
        assert (result.display_data, result.stdout, result.stderr) == ([], "", "")
        assert str(session.execute("'still here'")) == "'still here'"


def run_raw(ws: websocket.WebSocket, code: str, codec: protocol.Codec) -> dict[str, Any]:
    """Execute ``code``; the largest frame, the stream texts and the reply for it."""
    request = protocol.execute_request(code, session_id="raw", username="raw")
    frame = codec.encode(request)
    if isinstance(frame, bytes):
        ws.send_binary(frame)
    else:
        ws.send(frame)
    report: dict[str, Any] = {"largest": 0, "texts": [], "marks": [], "reply": None, "idle": False}
    while report["reply"] is None or not report["idle"]:
        frame = ws.recv()
        report["largest"] = max(report["largest"], len(frame))
        message = codec.decode(frame)
        if protocol.parent_id(message) != request["header"]["msg_id"]:
            continue
        msg_type, content = protocol.message_type(message), message["content"]
        if msg_type == "stream":
            report["texts"].append(content["text"])
            report["marks"].append(message["metadata"].get("sandbox_truncated"))
        elif msg_type == "execute_reply":
            report["reply"] = content
        elif msg_type == "status" and content["execution_state"] == "idle":
            report["idle"] = True
    return report


@pytest.mark.parametrize("v1", [False, True], ids=["legacy-json", "v1"])
def test_a_raw_websocket_never_gets_a_frame_above_the_limit(
    bounded_gateway: Gateway, v1: bool
) -> None:
    config = GatewayConfig(bounded_gateway.http, bounded_gateway.ws)
    with GatewayKernelSession(config) as session:
        url = protocol.channels_url(bounded_gateway.ws, session.kernel_id, uuid.uuid4().hex)
        protocols = [protocol.WS_SUBPROTOCOL] if v1 else None
        ws = websocket.create_connection(url, timeout=120, subprotocols=protocols)
        codec = protocol.codec_for(ws.getsubprotocol())
        try:
            assert codec is (protocol.V1_CODEC if v1 else protocol.JSON_CODEC)
            report = run_raw(ws, LOOP, codec)
            assert report["largest"] <= LIMIT + ENVELOPE, report["largest"]
            assert report["reply"]["status"] == "ok"
            text = "".join(report["texts"])
            assert text.startswith("x" * LIMIT) and f"{NOTICE} (stream)" in text
            assert any(mark and mark["kept"] == LIMIT for mark in report["marks"])
            # The same websocket goes on.
            after = run_raw(ws, HUGE_DISPLAY + "\nprint('after')", codec)
            assert after["largest"] <= LIMIT + ENVELOPE, after["largest"]
            assert after["texts"][0].startswith(f"{NOTICE} (display_data) of ")
            assert after["texts"][-1] == "after\n"
            # Non-ASCII text, which the legacy protocol sends escaped (6 bytes a character).
            euros = run_raw(ws, NON_ASCII, codec)
            assert euros["largest"] <= LIMIT + ENVELOPE, euros["largest"]
            assert euros["texts"][0].startswith("€" * 1000)
        finally:
            ws.close()
