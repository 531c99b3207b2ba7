"""Listing a directory of 200,000 entries: time, bytes and server memory, before and after paging.

Creates ``--entries`` empty files in one directory (on /dev/shm when it exists: creating that many
files on a busy disk takes minutes), then runs two file servers over it, one after the other:

- **before**: the ``fileserver`` package as of ``--before-ref`` (default ``e27400c``, the last
  commit whose ``GET /files`` answered a whole directory in one body), taken with ``git archive``;
- **after**: the working tree's, which pages the listing (``limit``, ``cursor``, ``Link``).

Each scenario runs ``--repeat`` times; the table shows the median wall time of the HTTP exchanges
(request sent to last byte received, on a raw socket; parsing excluded), what the client
received, and the server's peak RSS
(``VmHWM`` of the uvicorn process, cumulative since it started, read after the scenario). MB =
10^6 bytes. Design target: the server's peak stays under 100 MB.

    python bench/bench_fileserver_listing.py
    python bench/bench_fileserver_listing.py --entries 20000 --repeat 1
    python bench/bench_fileserver_listing.py --before-ref none   # the after rows only
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import shutil
import socket
import stat
import statistics
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests
from bench_fileserver import REPO_ROOT, free_port, peak_rss_mb, start_server
from requests.utils import parse_header_links

MB = 1_000_000
MIB = 1024 * 1024
RSS_TARGET_MB = 100.0
DEFAULT_BEFORE_REF = "e27400c"


@dataclass
class Fetched:
    requests: int = 0
    entries: int = 0
    bytes: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class Row:
    label: str
    fetched: Fetched
    seconds: float
    peak_mb: float


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / MB
    raise RuntimeError(f"no VmRSS for pid {pid}")


def make_directory(path: Path, count: int) -> None:
    path.mkdir(parents=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(count):
            # mknod: one system call per empty file.
            os.mknod(f"entry-{i:07d}.txt", stat.S_IFREG | 0o644, dir_fd=fd)
    finally:
        os.close(fd)


def extract_package(ref: str, destination: Path) -> None:
    """The ``fileserver`` package as of ``ref``, under ``destination``."""
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", "--format=tar", ref, "fileserver"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(destination, filter="data")
        else:  # Python < 3.10.12 / 3.11.4
            tar.extractall(destination)  # our own repository's archive


def dechunk(body: bytes) -> bytes:
    """The payload of a ``Transfer-Encoding: chunked`` body."""
    out: list[bytes] = []
    at = 0
    while True:
        end = body.index(b"\r\n", at)
        size = int(body[at:end].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(body[end + 2 : end + 2 + size])
        at = end + 2 + size + 2


def get(port: int, token: str, target: str) -> tuple[float, dict[str, str], bytes]:
    """One GET, timed until its last byte; parsed afterwards.

    A raw socket drained with large reads: a Python HTTP client decoding a chunked body as it
    arrives competes with the server for the CPU and inflates the server's figures.
    """
    request = (
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    ).encode()
    received: list[bytes] = []
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=600) as sock:
        sock.sendall(request)
        while data := sock.recv(4 * MIB):
            received.append(data)
    seconds = time.perf_counter() - started
    head, _, body = b"".join(received).partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    if status_line.split()[1] != "200":
        raise RuntimeError(f"GET {target}: {status_line}: {body[:300]!r}")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
    if headers.get("transfer-encoding") == "chunked":
        body = dechunk(body)
    return seconds, headers, body


def fetch(port: int, token: str, target: str, follow: bool) -> Fetched:
    """``target``, then with ``follow`` each ``Link: rel="next"`` up to the last page."""
    fetched = Fetched()
    next_target: str | None = target
    while next_target is not None:
        seconds, headers, body = get(port, token, next_target)
        fetched.seconds += seconds
        fetched.requests += 1
        fetched.bytes += len(body)
        fetched.entries += len(json.loads(body))
        links = parse_header_links(headers.get("link", ""))
        nxt = next((link["url"] for link in links if link.get("rel") == "next"), None)
        if nxt is None or not follow:
            next_target = None
        else:
            parts = urlsplit(urljoin(f"http://127.0.0.1{next_target}", nxt))
            next_target = f"{parts.path}?{parts.query}"
    return fetched


def is_paged(port: int) -> bool:
    schema = requests.get(f"http://127.0.0.1:{port}/openapi.json", timeout=30).json()
    return any(p["name"] == "limit" for p in schema["paths"]["/files"]["get"]["parameters"])


def measure(
    label: str, pid: int, repeat: int, run: Callable[[], Fetched], expect_entries: int
) -> Row:
    runs = [run() for _ in range(repeat)]
    for fetched in runs:
        if fetched.entries != expect_entries:
            raise RuntimeError(f"{label}: got {fetched.entries} entries, not {expect_entries}")
    return Row(label, runs[0], statistics.median(r.seconds for r in runs), peak_rss_mb(pid))


def serve(
    name: str,
    source: Path,
    root: Path,
    work: Path,
    scenarios: list[tuple[str, str, bool, int]],
    *,
    repeat: int,
    paged: bool,
) -> tuple[float, list[Row]]:
    """Run ``scenarios`` (label, path and query, follow the links?, expected entries)."""
    token = secrets.token_urlsafe(24)
    port = free_port()
    process = start_server(root, token, MIB, port, work / f"{name}.log", source=source)
    try:
        if is_paged(port) != paged:
            raise RuntimeError(
                f"the {name} server {'does not page' if paged else 'already pages'} listings"
            )
        idle = rss_mb(process.pid)
        rows = [
            measure(
                label, process.pid, repeat, partial(fetch, port, token, target, follow), expected
            )
            for label, target, follow, expected in scenarios
        ]
        return idle, rows
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=200_000, help="default 200,000")
    parser.add_argument("--repeat", type=int, default=3, help="runs per scenario (median shown)")
    parser.add_argument(
        "--before-ref",
        default=DEFAULT_BEFORE_REF,
        help=f"git ref of the unpaged server (default {DEFAULT_BEFORE_REF}); 'none' to skip",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path("/dev/shm") if Path("/dev/shm").is_dir() else None,
        help="scratch directory (default /dev/shm if present, else $TMPDIR)",
    )
    args = parser.parse_args()

    n = args.entries
    work = Path(tempfile.mkdtemp(prefix="bench-fileserver-listing-", dir=args.dir))
    try:
        root = work / "shared"
        started = time.perf_counter()
        make_directory(root / "big", n)
        created = time.perf_counter() - started

        results: list[tuple[str, float, list[Row]]] = []
        if args.before_ref != "none":
            source = work / "before"
            extract_package(args.before_ref, source)
            idle, rows = serve(
                "before",
                source,
                root,
                work,
                [("before: GET /files?path=big (one body)", "/files?path=big", False, n)],
                repeat=args.repeat,
                paged=False,
            )
            results.append(("before", idle, rows))
        idle, rows = serve(
            "after",
            REPO_ROOT,
            root,
            work,
            [
                ("after: first page, default limit", "/files?path=big", False, min(n, 1000)),
                ("after: all pages, limit=10000", "/files?path=big&limit=10000", True, n),
                ("after: all pages, default limit (1000)", "/files?path=big", True, n),
            ],
            repeat=args.repeat,
            paged=True,
        )
        results.append(("after", idle, rows))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"\n{n:,} entries in one directory on {args.dir or tempfile.gettempdir()} "
        f"(created in {created:.1f} s); median of {args.repeat} run(s).\n"
    )
    print("| scenario | requests | entries | bytes | time | server peak RSS (VmHWM) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, idle, rows in results:
        print(f"| {name}: server idle after start | | | | | {idle:.1f} MB |")
        for row in rows:
            f = row.fetched
            print(
                f"| {row.label} | {f.requests:,} | {f.entries:,} | {f.bytes / MIB:.2f} MiB "
                f"| {row.seconds:.2f} s | {row.peak_mb:.1f} MB |"
            )
    after_peak = max(row.peak_mb for row in results[-1][2])
    verdict = "met" if after_peak < RSS_TARGET_MB else "MISSED"
    print(
        f"\nTarget: server peak RSS < {RSS_TARGET_MB:.0f} MB after paging: {verdict} "
        f"({after_peak:.1f} MB)."
    )


if __name__ == "__main__":
    main()
