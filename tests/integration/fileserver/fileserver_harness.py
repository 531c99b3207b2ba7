"""A real file server under uvicorn in a subprocess, and a raw HTTP client for it.

The raw client writes request targets byte for byte, so traversal payloads reach the server
exactly as written (httpx and requests normalise ``..`` and re-encode paths).
"""

from __future__ import annotations

import http.client
import os
import secrets
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
SENTINEL_CONTENT = b"SENTINEL-7f3c0e9b: outside the shared root\n"


@dataclass(frozen=True)
class FsDirs:
    """``base/shared`` is the server's root; ``base/outside/sentinel.txt`` must stay untouched."""

    base: Path
    root: Path
    outside: Path
    sentinel: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        import json

        return json.loads(self.body)


def read_response(sock: socket.socket, method: str) -> RawResponse:
    response = http.client.HTTPResponse(sock, method=method)
    response.begin()
    body = response.read()
    headers = {k.lower(): v for k, v in response.getheaders()}
    return RawResponse(response.status, headers, body)


@dataclass
class FileServer:
    """A running server; ``request`` speaks raw HTTP/1.1 to it."""

    root: Path
    token: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict)
    address: str = "127.0.0.1"

    @property
    def base_url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def request(
        self,
        method: str,
        target: str | bytes,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        token: bool = True,
        timeout: float = 30.0,
    ) -> RawResponse:
        """Send one request with ``target`` exactly as given; ``token`` adds the bearer token."""
        raw_target = target.encode("latin-1") if isinstance(target, str) else target
        all_headers = {"Host": f"{self.address}:{self.port}", "Connection": "close"}
        if token:
            all_headers.update(self.auth())
        all_headers.update(headers or {})
        if body is not None:
            all_headers.setdefault("Content-Length", str(len(body)))
        head = method.encode() + b" " + raw_target + b" HTTP/1.1\r\n"
        head += b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in all_headers.items())
        with socket.create_connection((self.address, self.port), timeout=timeout) as sock:
            sock.sendall(head + b"\r\n" + (body or b""))
            return read_response(sock, method)

    def send_raw(self, head: bytes, method: str = "GET", timeout: float = 30.0) -> RawResponse:
        """Send ``head`` (request line and headers, CRLF-terminated) exactly as given."""
        with socket.create_connection((self.address, self.port), timeout=timeout) as sock:
            sock.sendall(head)
            return read_response(sock, method)

    def peak_rss_bytes(self) -> int:
        """The server process's peak resident set size so far (``VmHWM``)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmHWM for pid {self.process.pid}")

    def send_chunked_until_answered(
        self,
        method: str,
        target: str,
        chunks: Iterable[bytes],
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> tuple[RawResponse, int]:
        """Stream a chunked body, stopping as soon as the server answers.

        Returns the response and how many body bytes were sent before it came.
        """
        head = (
            f"{method} {target} HTTP/1.1\r\nHost: {self.address}:{self.port}\r\n"
            f"Authorization: Bearer {self.token}\r\nTransfer-Encoding: chunked\r\n"
            "Connection: close\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
            + "\r\n"
        ).encode()
        sent = 0
        with socket.create_connection((self.address, self.port), timeout=timeout) as sock:
            sock.sendall(head)
            try:
                finished = True
                for chunk in chunks:
                    readable, _, _ = select.select([sock], [], [], 0)
                    if readable:
                        finished = False
                        break
                    sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    sent += len(chunk)
                if finished:
                    sock.sendall(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                # The server answered and closed while we were still sending: read its answer.
                pass
            return read_response(sock, method), sent

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def server_env(**overrides: str) -> dict[str, str]:
    """The caller's environment without any file server settings, plus ``overrides``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FILE_SERVER_")
        and k not in ("SHARED_DATA_DIR", "SANDBOX_ALLOWED_HOSTS")
    }
    env.update(overrides)
    return env


def launch(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


def wait_healthy(
    process: subprocess.Popen[bytes], port: int, log_path: Path, address: str = "127.0.0.1"
) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"file server exited with {process.returncode}:\n{log_path.read_text()}"
            )
        try:
            with socket.create_connection((address, port), timeout=1) as sock:
                sock.sendall(
                    f"GET /health HTTP/1.1\r\nHost: {address}:{port}\r\n"
                    "Connection: close\r\n\r\n".encode()
                )
                if read_response(sock, "GET").status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"file server not healthy after 30 s:\n{log_path.read_text()}")


def start_uvicorn(
    root: Path,
    log_path: Path,
    *,
    max_upload_bytes: int = 1024 * 1024,
    extra_env: Mapping[str, str] | None = None,
    address: str = "127.0.0.1",
) -> FileServer:
    """``uvicorn fileserver.app:app`` from the repository root, configured by the environment."""
    token = secrets.token_urlsafe(24)
    port = free_port()
    env = server_env(
        SHARED_DATA_DIR=str(root),
        FILE_SERVER_TOKEN=token,
        FILE_SERVER_MAX_UPLOAD_BYTES=str(max_upload_bytes),
        **(extra_env or {}),
    )
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "fileserver.app:app",
        "--host",
        address,
        "--port",
        str(port),
    ]
    process = launch(argv, env, log_path)
    server = FileServer(root, token, port, log_path, process, env, address)
    try:
        wait_healthy(process, port, log_path, address)
    except BaseException:
        server.stop()
        raise
    return server


def temp_leftovers(directory: Path) -> list[Path]:
    """Staging files the server may have left in ``directory`` or below."""
    return [p for p in directory.rglob(".fileserver-upload-*")]
