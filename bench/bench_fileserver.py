"""File server throughput against ``cp`` on the same disk, and the server's peak memory.

Starts ``uvicorn fileserver.app:app`` (httptools + uvloop) in a subprocess, then in one run:

1. copies a SIZE file with ``cp`` (the baseline),
2. uploads it with ``PUT /files/...`` and downloads it back to disk with ``GET /files/...``, once
   with each client:

   - ``requests`` (the project's client library; Python, so it costs CPU of its own on the
     same cores as the server),
   - ``curl`` (a C client: ``-T file`` to upload, ``-o file`` to download), which measures the
     server with as little client overhead as possible; curl also downloads to ``/dev/null``,
     a diagnostic row without a verdict: the same server work without the client's write of the
     copy into the page cache, i.e. what the server can deliver,

repeats the steps ``--repeat`` times after a warm-up round, and prints one markdown table: median
MB/s each way per client, the ratio to ``cp``, the server's and the client's CPU seconds per GiB,
and the server's peak RSS (``VmHWM`` of the uvicorn process). MB = 10^6 bytes. Design targets:
>= 0.5x cp each way, RSS < 150 MB. Nothing is fsynced, neither by ``cp`` nor by the server
(``FILE_SERVER_FSYNC`` stays off): every row is a page-cache copy; ``os.sync()`` runs before each
timed step so that no step pays for the previous one's dirty pages.

    python bench/bench_fileserver.py                # 1 GiB
    python bench/bench_fileserver.py --size-mib 64  # quick run
    python bench/bench_fileserver.py --client curl  # one client only
"""

from __future__ import annotations

import argparse
import filecmp
import os
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
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
    root: Path, token: str, max_upload: int, port: int, log: Path, source: Path = REPO_ROOT
) -> subprocess.Popen[bytes]:
    """``uvicorn fileserver.app:app`` with the ``fileserver`` package found under ``source``."""
    env = dict(os.environ)
    env.update(
        SHARED_DATA_DIR=str(root),
        FILE_SERVER_TOKEN=token,
        FILE_SERVER_MAX_UPLOAD_BYTES=str(max_upload),
        # First on the path, ahead of an editable install of the repository.
        PYTHONPATH=os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")])),
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
                # What uvicorn's "auto" picks when uvicorn[standard] is installed; explicit here
                # so that a missing extra fails loudly instead of benchmarking the slow path.
                "--http",
                "httptools",
                "--loop",
                "uvloop",
            ],
            cwd=source,
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


def own_and_children_cpu() -> float:
    """CPU seconds of this process (the requests client) plus its waited-for children (curl)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass(frozen=True)
class Timing:
    wall: float
    server_cpu: float
    client_cpu: float


def timed(action: Callable[[], object], server_pid: int) -> Timing:
    """Wall seconds of ``action`` and the server and client CPU seconds it cost.

    Dirty pages are flushed first, outside the timed region.
    """
    os.sync()
    server_before = cpu_seconds(server_pid)
    client_before = own_and_children_cpu()
    started = time.perf_counter()
    action()
    elapsed = time.perf_counter() - started
    return Timing(
        elapsed,
        cpu_seconds(server_pid) - server_before,
        own_and_children_cpu() - client_before,
    )


CLIENTS = ("requests", "curl")
# Timed steps per client, in the order they run within a round.
WAYS = {"requests": ("upload", "download"), "curl": ("upload", "download", "download-null")}
LABELS = {
    "upload": "upload (PUT)",
    "download": "download (GET)",
    "download-null": "download (GET) to /dev/null",
}


def curl_command(header_file: Path, *args: str | Path) -> list[str]:
    # The token is read from a file (-H @file) so that it never appears in a process listing.
    return ["curl", "-sS", "--fail", "-H", f"@{header_file}", *(str(a) for a in args)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="file size (default 1024)")
    parser.add_argument(
        "--dir", type=Path, default=None, help="work directory (default: a temp dir in $TMPDIR)"
    )
    parser.add_argument(
        "--chunk-mib", type=int, default=1, help="requests client chunk size (default 1)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="measured rounds after a warm-up; medians reported"
    )
    parser.add_argument(
        "--client",
        choices=(*CLIENTS, "both"),
        default="both",
        help="HTTP client(s) to measure (default both)",
    )
    args = parser.parse_args()
    clients = CLIENTS if args.client == "both" else (args.client,)
    if "curl" in clients and shutil.which("curl") is None:
        parser.error("curl is not installed; use --client requests")

    size = args.size_mib * MIB
    chunk = args.chunk_mib * MIB
    work = Path(tempfile.mkdtemp(prefix="bench-fileserver-", dir=args.dir))
    root = work / "shared"
    root.mkdir()
    source = work / "source.bin"
    token = secrets.token_urlsafe(32)
    header_file = work / "auth-header"
    header_file.touch(mode=0o600)
    header_file.write_text(f"Authorization: Bearer {token}\n")
    port = free_port()
    server = start_server(root, token, size, port, work / "server.log")
    cp_times: list[Timing] = []
    times: dict[tuple[str, str], list[Timing]] = {
        (client, way): [] for client in clients for way in WAYS[client]
    }
    load_before = os.getloadavg()[0]
    try:
        make_source(source, size)
        base = f"http://127.0.0.1:{port}/files"
        cp_target = work / "cp-copy.bin"
        uploaded = root / "upload.bin"
        downloaded = work / "download.bin"

        # requests is the HTTP library of the project's client (jupyter_kernel_client).
        with requests.Session() as client:
            client.headers.update({"Authorization": f"Bearer {token}"})

            def copy() -> None:
                subprocess.run(["cp", source, cp_target], check=True)

            def requests_upload() -> None:
                # The stubs say Iterable[bytes]; http.client sends any buffer, memoryview too.
                response = client.put(
                    f"{base}/upload.bin",
                    data=cast("Iterable[bytes]", FileBody(source, chunk)),
                    timeout=600,
                )
                response.raise_for_status()

            def requests_download() -> None:
                with (
                    client.get(f"{base}/upload.bin", stream=True, timeout=600) as response,
                    downloaded.open("wb", buffering=0) as out,
                ):
                    response.raise_for_status()
                    for data in response.raw.stream(chunk, decode_content=False):
                        out.write(data)

            def curl_upload() -> None:
                # -T streams the file with Content-Length; "Expect:" skips the 100-continue
                # round trip, as requests does.
                command = curl_command(header_file, "-H", "Expect:", "-o", "/dev/null", "-T")
                subprocess.run([*command, source, f"{base}/upload.bin"], check=True)

            def curl_download() -> None:
                command = curl_command(header_file, "-o", downloaded, f"{base}/upload.bin")
                subprocess.run(command, check=True)

            def curl_download_null() -> None:
                command = curl_command(header_file, "-o", "/dev/null", f"{base}/upload.bin")
                subprocess.run(command, check=True)

            steps: dict[tuple[str, str], Callable[[], None]] = {
                ("requests", "upload"): requests_upload,
                ("requests", "download"): requests_download,
                ("curl", "upload"): curl_upload,
                ("curl", "download"): curl_download,
                ("curl", "download-null"): curl_download_null,
            }

            # Round 0 is a warm-up: on a VM the first touch of fresh memory for the page cache
            # is much slower than reuse, and would otherwise penalise whichever step runs first.
            for round_ in range(args.repeat + 1):
                cp_timing = timed(copy, server.pid)
                cp_target.unlink()
                for client_name in clients:
                    results = {
                        way: timed(steps[(client_name, way)], server.pid)
                        for way in WAYS[client_name]
                    }
                    if uploaded.stat().st_size != size or downloaded.stat().st_size != size:
                        raise RuntimeError(f"{client_name}: a transferred file has the wrong size")
                    if round_ == 0 and not filecmp.cmp(source, downloaded, shallow=False):
                        raise RuntimeError(f"{client_name}: downloaded file differs from source")
                    for path in (uploaded, downloaded):
                        path.unlink()
                    if round_ > 0:
                        for way, timing in results.items():
                            times[(client_name, way)].append(timing)
                if round_ > 0:
                    cp_times.append(cp_timing)
        rss = peak_rss_mb(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(work, ignore_errors=True)

    gib = size / 1024**3

    def rate(seconds: float) -> float:
        return float(size / MB / seconds)

    def median(values: Iterable[float]) -> float:
        return float(statistics.median(values))

    cp_rate = rate(median(t.wall for t in cp_times))
    cp_cpu = median(t.client_cpu for t in cp_times) / gib

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    rows = [
        ("cp (baseline)", f"{cp_rate:,.0f} MB/s", "1.00x", "n/a", f"{cp_cpu:.2f} s/GiB", "", "")
    ]
    for client_name in clients:
        for way in WAYS[client_name]:
            samples = times[(client_name, way)]
            throughput = rate(median(t.wall for t in samples))
            ratio = throughput / cp_rate
            diagnostic = way == "download-null"
            rows.append(
                (
                    f"{LABELS[way]}, {client_name}",
                    f"{throughput:,.0f} MB/s",
                    f"{ratio:.2f}x",
                    f"{median(t.server_cpu for t in samples) / gib:.2f} s/GiB",
                    f"{median(t.client_cpu for t in samples) / gib:.2f} s/GiB",
                    "diagnostic" if diagnostic else f">= {CP_RATIO_TARGET}x cp",
                    "" if diagnostic else verdict(ratio >= CP_RATIO_TARGET),
                )
            )
    rows.append(
        (
            "server peak RSS (VmHWM)",
            f"{rss:.1f} MB",
            "",
            "",
            "",
            f"< {RSS_TARGET_MB:.0f} MB",
            verdict(rss < RSS_TARGET_MB),
        )
    )
    print(
        f"File server vs cp: {args.size_mib} MiB file, clients {', '.join(clients)} "
        f"(requests in {chunk // MIB} MiB chunks), median of {args.repeat} rounds after a "
        f"warm-up; {os.cpu_count()} CPUs, load average {load_before:.1f} at start\n"
    )
    print("| measurement | throughput | ratio to cp | server CPU | client CPU | target | result |")
    print("|---|---:|---:|---:|---:|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
