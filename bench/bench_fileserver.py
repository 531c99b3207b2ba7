"""File server throughput against ``cp`` on the same disk, and the server's peak memory.

Starts ``uvicorn fileserver.app:app`` in a subprocess, then in one run:

1. copies a SIZE file with ``cp`` (the baseline),
2. uploads it with ``PUT /files/...`` (requests, streamed from disk in chunks),
3. downloads it with ``GET /files/...`` (requests, streamed to disk in chunks),

repeats the three steps ``--repeat`` times after a warm-up round, and prints one markdown table:
median MB/s each way, the ratio to ``cp``, and the server's peak RSS (``VmHWM`` of the uvicorn
process). MB = 10^6 bytes. Targets (issue 3): >= 0.5x cp each way, RSS < 150 MB.

    python bench/bench_fileserver.py                # 1 GiB
    python bench/bench_fileserver.py --size-mib 64  # quick run
"""

from __future__ import annotations

import argparse
import filecmp
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import cast

import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
MB = 1_000_000
MIB = 1024 * 1024
CP_RATIO_TARGET = 0.5
RSS_TARGET_MB = 150.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_source(path: Path, size: int) -> None:
    # A random block repeated: incompressible enough for a filesystem, and cheap to produce.
    block = os.urandom(16 * MIB)
    with path.open("wb") as out:
        remaining = size
        while remaining > 0:
            piece = block[: min(len(block), remaining)]
            out.write(piece)
            remaining -= len(piece)
    os.sync()


class FileBody:
    """An upload body for requests: sized (so it is sent with Content-Length, not chunked) and
    iterable (so http.client sends each chunk with one ``sendall`` instead of 8 KiB reads)."""

    def __init__(self, path: Path, chunk: int) -> None:
        self._path = path
        self._chunk = chunk

    def __len__(self) -> int:
        return self._path.stat().st_size

    def __iter__(self) -> Iterator[memoryview]:
        buffer = bytearray(self._chunk)
        view = memoryview(buffer)
        with self._path.open("rb", buffering=0) as src:
            # One buffer reused: sendall has consumed a chunk before the next is read.
            while count := src.readinto(buffer):
                yield view[:count]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time consumed so far by ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / MB
    raise RuntimeError(f"no VmHWM for pid {pid}")


def start_server(
    root: Path, token: str, max_upload: int, port: int, log: Path
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        SHARED_DATA_DIR=str(root),
        FILE_SERVER_TOKEN=token,
        FILE_SERVER_MAX_UPLOAD_BYTES=str(max_upload),
    )
    env.pop("FILE_SERVER_AUTH_DISABLED", None)
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "fileserver.app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except requests.ConnectionError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not become healthy within 30 s")


def timed(action: Callable[[], object], server_pid: int) -> tuple[float, float]:
    """Wall seconds of ``action`` and the server CPU seconds it cost (dirty pages flushed first)."""
    os.sync()
    cpu_before = cpu_seconds(server_pid)
    started = time.perf_counter()
    action()
    elapsed = time.perf_counter() - started
    return elapsed, cpu_seconds(server_pid) - cpu_before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="file size (default 1024)")
    parser.add_argument(
        "--dir", type=Path, default=None, help="work directory (default: a temp dir in $TMPDIR)"
    )
    parser.add_argument("--chunk-mib", type=int, default=1, help="client chunk size (default 1)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="measured rounds after a warm-up; medians reported"
    )
    args = parser.parse_args()

    size = args.size_mib * MIB
    chunk = args.chunk_mib * MIB
    work = Path(tempfile.mkdtemp(prefix="bench-fileserver-", dir=args.dir))
    root = work / "shared"
    root.mkdir()
    source = work / "source.bin"
    token = secrets.token_urlsafe(32)
    port = free_port()
    server = start_server(root, token, size, port, work / "server.log")
    cp_times: list[float] = []
    upload_times: list[tuple[float, float]] = []
    download_times: list[tuple[float, float]] = []
    load_before = os.getloadavg()[0]
    try:
        make_source(source, size)
        headers = {"Authorization": f"Bearer {token}"}
        base = f"http://127.0.0.1:{port}/files"
        cp_target = work / "cp-copy.bin"
        uploaded = root / "upload.bin"
        downloaded = work / "download.bin"

        # requests is the HTTP library of the project's client (jupyter_kernel_client).
        with requests.Session() as client:
            client.headers.update(headers)

            def copy() -> None:
                subprocess.run(["cp", source, cp_target], check=True)

            def upload() -> None:
                # The stubs say Iterable[bytes]; http.client sends any buffer, memoryview too.
                response = client.put(
                    f"{base}/upload.bin",
                    data=cast("Iterable[bytes]", FileBody(source, chunk)),
                    timeout=600,
                )
                response.raise_for_status()

            def download() -> None:
                with (
                    client.get(f"{base}/upload.bin", stream=True, timeout=600) as response,
                    downloaded.open("wb", buffering=0) as out,
                ):
                    response.raise_for_status()
                    for data in response.raw.stream(chunk, decode_content=False):
                        out.write(data)

            # Round 0 is a warm-up: on a VM the first touch of fresh memory for the page cache
            # is much slower than reuse, and would otherwise penalise whichever step runs first.
            for round_ in range(args.repeat + 1):
                results = (
                    timed(copy, server.pid),
                    timed(upload, server.pid),
                    timed(download, server.pid),
                )
                if uploaded.stat().st_size != size or downloaded.stat().st_size != size:
                    raise RuntimeError("a transferred file has the wrong size")
                if round_ == 0 and not filecmp.cmp(source, downloaded, shallow=False):
                    raise RuntimeError("downloaded file differs from the source")
                for path in (cp_target, uploaded, downloaded):
                    path.unlink()
                if round_ > 0:
                    cp_times.append(results[0][0])
                    upload_times.append(results[1])
                    download_times.append(results[2])
        rss = peak_rss_mb(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(work, ignore_errors=True)

    cp_seconds = float(statistics.median(cp_times))
    upload_seconds = float(statistics.median(t for t, _ in upload_times))
    download_seconds = float(statistics.median(t for t, _ in download_times))
    gib = size / 1024**3
    upload_cpu = statistics.median(c for _, c in upload_times) / gib
    download_cpu = statistics.median(c for _, c in download_times) / gib

    def rate(seconds: float) -> float:
        return float(size / MB / seconds)

    cp_rate = rate(cp_seconds)

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    up_ratio = rate(upload_seconds) / cp_rate
    down_ratio = rate(download_seconds) / cp_rate
    rows = [
        ("cp (baseline)", f"{cp_rate:,.0f} MB/s", "1.00x", "n/a", "", ""),
        (
            "upload (PUT)",
            f"{rate(upload_seconds):,.0f} MB/s",
            f"{up_ratio:.2f}x",
            f"{upload_cpu:.2f} s/GiB",
            f">= {CP_RATIO_TARGET}x cp",
            verdict(up_ratio >= CP_RATIO_TARGET),
        ),
        (
            "download (GET)",
            f"{rate(download_seconds):,.0f} MB/s",
            f"{down_ratio:.2f}x",
            f"{download_cpu:.2f} s/GiB",
            f">= {CP_RATIO_TARGET}x cp",
            verdict(down_ratio >= CP_RATIO_TARGET),
        ),
        (
            "server peak RSS (VmHWM)",
            f"{rss:.1f} MB",
            "",
            "",
            f"< {RSS_TARGET_MB:.0f} MB",
            verdict(rss < RSS_TARGET_MB),
        ),
    ]
    print(
        f"File server vs cp: {args.size_mib} MiB file, {chunk // MIB} MiB client chunks, "
        f"median of {args.repeat} rounds after a warm-up; {os.cpu_count()} CPUs, "
        f"load average {load_before:.1f} at start\n"
    )
    print("| measurement | throughput | ratio to cp | server CPU | target | result |")
    print("|---|---:|---:|---:|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
