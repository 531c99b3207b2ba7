"""HTTP/1.1 requests as the enforcement point reads them: one head at a time, strictly.

Every request on a kernel's connection is read before a byte of it is forwarded: its Host (and
an absolute target's host) must name the host the connection was granted for, or it is answered
here and never sent.  Bodies are relayed by their framing, so the next head is found where the
origin will find it; anything a server could frame differently (both Content-Length and
Transfer-Encoding, two lengths, an encoding other than chunked, folded or malformed headers) is
refused, which closes request smuggling.  Upgrades (websockets) are refused: after a 101 the
bytes would no longer be requests to check.  Responses are not read at all.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Final

from sandbox_gateway.egress.policy import normalise_name

HEAD_LIMIT: Final = 64 * 1024
LINE_LIMIT: Final = 8 * 1024
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) HTTP/1\.([01])")
_HOST = re.compile(r"(\[[0-9a-fA-F:.]+\]|[^:\[\]]+)(?::([0-9]{1,5}))?")


class BadRequest(Exception):
    """A request refused before it was forwarded: ``status`` and ``reason`` for the answer."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail


@dataclass
class Request:
    method: str
    target: str
    raw: bytes
    """The head as received (forwarded unchanged, unless ``origin_form`` rewrote the line)."""
    headers: list[tuple[str, str]] = field(default_factory=list)
    host: str = ""
    port: int | None = None
    length: int = 0
    chunked: bool = False

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]


def split_host(text: str) -> tuple[str, int | None]:
    """``name[:port]`` → (normalised name, port); :class:`BadRequest` if it is not one."""
    match = _HOST.fullmatch(text.strip())
    name = normalise_name(match.group(1)) if match else None
    if match is None or name is None:
        raise BadRequest(400, "Bad Request", f"not a host name: {text[:100]!r}")
    port = int(match.group(2)) if match.group(2) else None
    if port is not None and not 1 <= port <= 65535:
        raise BadRequest(400, "Bad Request", f"bad port in {text[:100]!r}")
    return name, port


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request's head; ``None`` when the kernel closed the connection between requests."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise BadRequest(
            400, "Bad Request", "the connection closed inside a request head"
        ) from None
    except asyncio.LimitOverrunError:
        raise BadRequest(431, "Request Header Fields Too Large", "request head too large") from None
    return parse_head(raw)


def parse_head(raw: bytes) -> Request:
    if len(raw) > HEAD_LIMIT:
        raise BadRequest(431, "Request Header Fields Too Large", "request head too large")
    lines = raw[:-4].split(b"\r\n")
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        raise BadRequest(400, "Bad Request", f"not an HTTP/1.x request line: {lines[0][:100]!r}")
    request = Request(match.group(1).decode(), match.group(2).decode("latin-1"), raw)
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name) or b"\n" in value or b"\r" in value:
            raise BadRequest(400, "Bad Request", f"malformed header line {line[:100]!r}")
        if b"\x00" in value:
            raise BadRequest(400, "Bad Request", "NUL in a header value")
        request.headers.append((name.decode().lower(), value.strip(b" \t").decode("latin-1")))
    _frame(request)
    hosts = request.header("host")
    if request.method == "CONNECT":
        request.host, request.port = split_host(request.target)
        if request.port is None:
            raise BadRequest(400, "Bad Request", "CONNECT needs host:port")
    elif len(hosts) != 1:
        raise BadRequest(400, "Bad Request", f"{len(hosts)} Host headers; exactly one is needed")
    else:
        request.host, request.port = split_host(hosts[0])
    if request.header("upgrade") or any(
        "upgrade" in value.lower() for value in request.header("connection")
    ):
        raise BadRequest(501, "Not Implemented", "protocol upgrades are not relayed")
    return request


def _frame(request: Request) -> None:
    encodings = request.header("transfer-encoding")
    lengths = request.header("content-length")
    if encodings:
        if lengths:
            raise BadRequest(400, "Bad Request", "both Content-Length and Transfer-Encoding")
        if [e.strip().lower() for e in ",".join(encodings).split(",")] != ["chunked"]:
            raise BadRequest(501, "Not Implemented", "a Transfer-Encoding other than chunked")
        request.chunked = True
    elif lengths:
        values = {value.strip() for value in ",".join(lengths).split(",")}
        if len(values) != 1 or not next(iter(values)).isdigit():
            raise BadRequest(400, "Bad Request", f"bad Content-Length {lengths!r}")
        request.length = int(values.pop())


def origin_form(request: Request) -> tuple[str, int | None]:
    """For an absolute target (``http://host:port/path``, what a proxy client sends): its host
    and port, with the head rewritten to origin form.  Origin form is left as it is."""
    target = request.target
    if target.startswith("/") or target == "*":
        return request.host, request.port
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() != "http":
        raise BadRequest(400, "Bad Request", f"unsupported request target {target[:100]!r}")
    authority, slash, path = rest.partition("/")
    name, port = split_host(authority)
    if (name, port or 80) != (request.host, request.port or 80):
        raise BadRequest(400, "Bad Request", "the target's host and the Host header differ")
    line_end = request.raw.index(b"\r\n")
    version = request.raw[:line_end].rsplit(b" ", 1)[1]
    head = f"{request.method} /{path if slash else ''} ".encode() + version
    request.raw = head + request.raw[line_end:]
    request.target = "/" + path
    return name, port


async def relay_body(
    request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> int:
    """Copy the request's body as it is framed; return its bytes."""
    if request.chunked:
        return await _relay_chunked(reader, writer)
    left = request.length
    while left:
        data = await reader.read(min(left, 1 << 16))
        if not data:
            raise BadRequest(400, "Bad Request", "the connection closed inside a body")
        writer.write(data)
        await writer.drain()
        left -= len(data)
    return request.length


async def _relay_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    total = 0
    while True:
        line = await _line(reader)
        size_text = line.split(b";", 1)[0].strip()
        if not size_text or not all(c in b"0123456789abcdefABCDEF" for c in size_text):
            raise BadRequest(400, "Bad Request", "bad chunk size")
        size = int(size_text, 16)
        writer.write(line)
        if size == 0:
            while True:  # trailers, then the empty line
                trailer = await _line(reader)
                writer.write(trailer)
                if trailer == b"\r\n":
                    await writer.drain()
                    return total
        try:
            chunk = await reader.readexactly(size + 2)
        except asyncio.IncompleteReadError:
            raise BadRequest(400, "Bad Request", "the connection closed inside a chunk") from None
        if not chunk.endswith(b"\r\n"):
            raise BadRequest(400, "Bad Request", "a chunk without its CRLF")
        writer.write(chunk)
        await writer.drain()
        total += size


async def _line(reader: asyncio.StreamReader) -> bytes:
    try:
        line = await reader.readuntil(b"\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        raise BadRequest(400, "Bad Request", "a malformed chunked body") from None
    if len(line) > LINE_LIMIT:
        raise BadRequest(400, "Bad Request", "a chunk line too long")
    return line


def answer(status: int, reason: str, detail: str) -> bytes:
    """A complete response, sent instead of forwarding a refused request."""
    body = f"{status} {reason}: {detail}\n".encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
