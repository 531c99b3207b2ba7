"""Kernel messages bounded in size on their way to every client, the notebook included.

A kernel decides how large one Jupyter message is: a loop that writes 300 x 1 MB to stdout
between two flushes makes ipykernel send one 300 MB ``stream`` message.  Stock Enterprise
Gateway forwards it whole: the Python client refuses it (``TransportError``, the connection
dropped) where its user expects a truncated result, the notebook's server loses its kernel
connection (tornado's websocket client takes 10 MiB at most), and a client without a limit
receives all of it.  The gateway is the trusted middle and already holds every message it
forwards, so it bounds them there, for every client.

Where
    jupyter_server 1.x's ``ZMQChannelsHandler._on_zmq_reply`` gets each kernel message as raw
    frames, before either websocket protocol: v1 forwards the frames as they are, the legacy
    JSON protocol (what the notebook's server speaks to the gateway) verifies the HMAC,
    deserialises and re-encodes.  A message whose frames add up to at most the limit costs one
    sum of frame lengths and goes on untouched.

Above ``SANDBOX_MAX_MESSAGE_BYTES`` (default ``16m``: a size in the syntax of
``SANDBOX_KERNEL_MEMORY``, at least ``64k``; a bad value stops the gateway) the message is
rewritten, keeping its header and ``parent_header`` so that it lands in the cell that caused it:

* ``stream``: its text is cut, on a character boundary, to what fits in
  ``SANDBOX_MAX_MESSAGE_BYTES`` bytes of JSON (plain text: that many bytes; a character that
  JSON escapes counts as its escape), and a notice line is appended;
* a ``*_reply``: an error reply of the same type (``ename`` ``MessageTooLarge``, the notice as
  ``evalue``), so that the request still completes;
* ``input_request``: the notice is the prompt;
* ``execute_input`` (the kernel's echo of the code its client sent): dropped;
* any other type (``display_data``, ``execute_result``, ``error``, ``comm_msg``, ...): a
  ``stream`` to stderr carrying the notice.

Every rewritten message carries the mark :data:`MARK` in its (message-level) ``metadata``:
``{"msg_type": <original type>, "bytes": <original size>, "limit": <limit>, "kept": <characters
of the kernel's text kept>}``.  The Python client reads it: its result says ``truncated`` and
holds the kept text without the notice.  Browsers ignore it and show the notice.  A kernel can
forge the mark only on its own output.  The metadata and buffers of the original are dropped, and
the message is signed again with the kernel session's key (the legacy path verifies it).

The rewritten message is at most the limit plus its header and parent header (each at most
:data:`ENVELOPE_LIMIT`; a message with a larger one cannot be routed cheaply and is dropped) and
the notice, whatever its text is made of, in either protocol: the legacy protocol's JSON
escapes every non-ASCII character (``\\uXXXX``, up to three times its UTF-8), so on a legacy
connection the text is measured in that form.

Cost of the cut: only the start of the text is read and decoded (O(limit)), never the whole
message, when ``name`` precedes ``text`` in the content, as every kernel writes it; in any other
layout the text is dropped and the notice sent alone.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from json.decoder import JSONDecodeError
from typing import Any, Final

from sandbox_gateway.admission.limits import SettingsError, size_setting

DEFAULT_MAX_MESSAGE_BYTES: Final = "16m"
MIN_MAX_MESSAGE_BYTES: Final = 64 * 1024
ENVELOPE_LIMIT: Final = 64 * 1024
"""Largest header or parent header of a message that is rewritten (a real one is ~300 bytes)."""
MARK: Final = "sandbox_truncated"
"""Key of the mark in a rewritten message's metadata (read by jupyter_kernel_client)."""
DELIMITER: Final = b"<IDS|MSG>"
STREAM_NAMES: Final = ("stdout", "stderr")

_SHORT: Final = 4096
"""Longest key or string value read before a stream's text (``name`` is 6 bytes)."""
_ESCAPE: Final = 6
"""Length of the longest JSON escape, ``\\uXXXX``."""
_WHITESPACE: Final = b" \t\n\r"

log = logging.getLogger("sandbox_messages")

# json's C scanner of one string: it reads from a position and stops at the string's end.
_scanstring: Callable[[str, int, bool], tuple[str, int]]
_scanstring = json.decoder.scanstring  # type: ignore[attr-defined]

Frames = Sequence[bytes]
Sign = Callable[[list[bytes]], bytes]


@dataclass(frozen=True)
class MessageSettings:
    """The gateway's bound on one kernel message, checked once at start-up."""

    max_message_bytes: int
    """Largest kernel message forwarded unchanged (its frames after the routing identities)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MessageSettings:
        limit, text = size_setting(env, "SANDBOX_MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES)
        if limit < MIN_MAX_MESSAGE_BYTES:
            raise SettingsError(f"SANDBOX_MAX_MESSAGE_BYTES must be at least 64k, got {text!r}")
        return cls(limit)


# --- rewriting one message -----------------------------------------------------------------------


def bound_message(
    frames: Frames, limit: int, sign: Sign, *, ascii_json: bool = False
) -> Frames | None:
    """``frames`` if the message is within ``limit``, else its bounded rewrite (see the module
    docstring), signed by ``sign``; ``None`` when it is dropped.

    ``ascii_json``: the message goes on in the legacy protocol, whose JSON escapes every
    non-ASCII character; a stream's text is then measured in that form.
    """
    try:
        split = list(frames).index(DELIMITER)
    except ValueError:
        return frames  # not a Jupyter message: jupyter_server logs and drops it
    size = sum(len(frame) for frame in frames[split + 1 :])
    if size <= limit:
        return frames
    parts = frames[split + 2 :]
    header = _envelope(parts, 0)
    parent = _envelope(parts, 1)
    msg_type = header.get("msg_type") if header is not None else None
    if header is None or parent is None or not isinstance(msg_type, str) or len(parts) < 4:
        log.warning("dropped a kernel message of %d bytes: it cannot be routed", size)
        return None
    if msg_type == "execute_input":
        log.warning("dropped an execute_input message of %d bytes", size)
        return None
    shown = msg_type[:40]  # the kernel's own words: kept short
    notice = (
        f"[sandbox gateway: a kernel message ({shown}) of {size} bytes was more than "
        f"SANDBOX_MAX_MESSAGE_BYTES ({limit} bytes); the rest of it was dropped]"
    )
    kept = ""
    cut = _stream_cut(bytes(parts[3]), limit) if msg_type == "stream" else None
    if cut is not None:
        name, kept = cut
        if ascii_json and not kept.isascii():
            kept = _string_prefix(json.dumps(kept).encode(), 1, limit) or ""
        separator = "" if not kept or kept.endswith("\n") else "\n"
        content: dict[str, Any] = {"name": name, "text": f"{kept}{separator}{notice}\n"}
    elif msg_type.endswith("_reply"):
        content = {
            "status": "error",
            "ename": "MessageTooLarge",
            "evalue": notice,
            "traceback": [notice],
        }
    elif msg_type == "input_request":
        content = {"prompt": notice + "\n", "password": False}
    else:
        header = {**header, "msg_type": "stream"}
        content = {"name": "stderr", "text": notice + "\n"}
    log.warning("cut a kernel %s message of %d bytes to the limit of %d", shown, size, limit)
    metadata = {MARK: {"msg_type": msg_type, "bytes": size, "limit": limit, "kept": len(kept)}}
    rewritten = [
        _pack(header) if header.get("msg_type") != msg_type else bytes(parts[0]),
        bytes(parts[1]),
        _pack(metadata),
        _pack(content),
    ]
    return [*frames[:split], DELIMITER, sign(rewritten), *rewritten]


def _envelope(parts: Frames, index: int) -> dict[str, Any] | None:
    """Header or parent header ``index`` as a dict, if it is small and well-formed."""
    if len(parts) <= index or len(parts[index]) > ENVELOPE_LIMIT:
        return None
    try:
        value = json.loads(bytes(parts[index]))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _pack(value: dict[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# --- the start of a stream's text, read without parsing the rest ----------------------------------


def _stream_cut(content: bytes, limit: int) -> tuple[str, str] | None:
    """``(name, the start of text that fits in limit bytes)`` of a stream's content, or ``None``
    unless it is an object whose keys before ``text`` have short string values, ``name``
    among them."""
    pos = _skip_space(content, 0)
    if content[pos : pos + 1] != b"{":
        return None
    pos += 1
    fields: dict[str, str] = {}
    while True:
        key, pos = _short_string(content, _skip_space(content, pos))
        pos = _skip_space(content, pos) if key is not None else pos
        if key is None or content[pos : pos + 1] != b":":
            return None
        pos = _skip_space(content, pos + 1)
        if key == "text":
            name = fields.get("name")
            if name not in STREAM_NAMES or content[pos : pos + 1] != b'"':
                return None
            text = _string_prefix(content, pos + 1, limit)
            return None if text is None else (name, text)
        value, pos = _short_string(content, pos)
        pos = _skip_space(content, pos) if value is not None else pos
        if value is None or content[pos : pos + 1] != b",":
            return None  # no text before the end (or another type of value)
        fields[key] = value
        pos += 1


def _skip_space(data: bytes, pos: int) -> int:
    while pos < len(data) and data[pos] in _WHITESPACE:
        pos += 1
    return pos


def _short_string(data: bytes, pos: int) -> tuple[str | None, int]:
    """The JSON string at ``pos`` and the position after it, if it is at most :data:`_SHORT`."""
    if data[pos : pos + 1] != b'"':
        return None, pos
    window = data[pos + 1 : pos + 1 + _SHORT].decode("utf-8", "surrogateescape")
    try:
        value, end = _scanstring(window, 0, False)
    except JSONDecodeError:
        return None, pos
    return value, pos + 1 + len(window[:end].encode("utf-8", "surrogateescape"))


def _string_prefix(data: bytes, start: int, limit: int) -> str | None:
    """The start of the JSON string whose body starts at ``start``: the characters whose JSON
    form fits in ``limit`` bytes, or ``None`` if the string is malformed.

    Measured in JSON, not in text: re-encoded (``ensure_ascii=False``), no character takes
    more room than it did, so the rewritten message is bounded whatever the text is made of
    (control characters take six bytes each).  Plain text keeps ``limit`` bytes.
    """
    stop = min(start + limit, len(data))
    while stop > start and stop < len(data) and 0x80 <= data[stop] < 0xC0:
        stop -= 1  # not inside a UTF-8 sequence (escapes are ASCII: never inside one)
    try:
        body = data[start:stop].decode("utf-8")
    except UnicodeDecodeError:
        return None
    text = _scan(body)
    return None if text is None else _valid(text)


def _scan(body: str) -> str | None:
    """Decode the start of a JSON string body (up to its end, if the end is in ``body``)."""
    try:
        text = _scanstring(body, 0, True)[0]
        return text
    except JSONDecodeError:
        pass  # no closing quote in the window, or the window ends inside an escape
    for trim in range(_ESCAPE):
        try:
            text = _scanstring(body[: len(body) - trim] + '"', 0, True)[0]
        except JSONDecodeError:
            continue
        if text and "\ud800" <= text[-1] <= "\udbff":
            text = text[:-1]  # the first half of a surrogate pair cut by the window
        return text
    return None


def _valid(text: str) -> str:
    """``text`` with unpaired surrogates (from ``\\udXXX`` escapes) replaced by U+FFFD."""
    if text.isascii():
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


# --- Enterprise Gateway patch --------------------------------------------------------------------


def _bound_kernel_messages(limit: int) -> None:
    from jupyter_server.services.kernels.handlers import ZMQChannelsHandler

    original: Callable[..., Any] = ZMQChannelsHandler._on_zmq_reply

    def _on_zmq_reply(self: Any, stream: Any, msg_list: Frames) -> Any:
        # The common case costs this sum: the frames are already in memory, nothing is parsed.
        if sum(map(len, msg_list)) > limit:
            legacy = self.subprotocol != "v1.kernel.websocket.jupyter.org"
            bounded = bound_message(msg_list, limit, self.session.sign, ascii_json=legacy)
            if bounded is None:
                return None
            msg_list = bounded
        return original(self, stream, msg_list)

    ZMQChannelsHandler._on_zmq_reply = _on_zmq_reply  # type: ignore[method-assign]


def apply(env: Mapping[str, str] | None = None) -> MessageSettings:
    """Read the setting (exit with a message if it is invalid) and bound kernel messages."""
    try:
        settings = MessageSettings.from_env(os.environ if env is None else env)
    except SettingsError as exc:
        raise SystemExit(f"sandbox gateway: invalid setting: {exc}") from None
    _bound_kernel_messages(settings.max_message_bytes)
    return settings
