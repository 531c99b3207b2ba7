"""The egress enforcement point against a direct connection, on loopback: one run, one table.

The proxy (``sandbox_gateway.egress``) and the project's own test host (``testkit.egress``: an
HTTPS origin with a test CA) run in this process's event loop thread, on addresses of
127.0.0.0/8 and the real ports (so: root).  The client is a blocking Python socket, the same
for both paths:

* **direct**: TLS to the origin, verified against the test CA;
* **through the proxy**: TLS to the proxy (verified against the platform CA it minted a
  certificate with), which reads the request, resolves the name and opens its own TLS
  connection to the origin.

Rows, interleaved so that other load falls on both alike: a 100 MiB download (MB/s), and the
time from ``connect()`` to the first byte of the answer on a new HTTPS connection.

A second table, on Docker: a pooled start -> first result (``start()`` + ``execute("1+1")``)
with a list (``KERNEL_EGRESS_ALLOW=allowed.test``) beside one without, alternating, each from a
full pool of 2 (bench_pool.py's compose project, gateway and egress service, ceiling
``allowed.test``).  ``--pooled-starts 0`` leaves it out.

    python bench/bench_egress.py                 # about three minutes
    python bench/bench_egress.py --runs 5 --connections 200 --pooled-starts 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROXY, ORIGIN, KERNEL = "127.0.0.20", "127.0.0.30", "127.0.0.2"
NAME = "allowed.test"
MIB = 1024 * 1024
THROUGHPUT_TARGET = 0.8  # through the proxy, times direct
FIRST_BYTE_TARGET_MS = 2.0  # added to direct, p50
POOLED_TARGET = 1.1  # a pooled start with a list, times one without, p50


def serve(role: str, directory: Path) -> None:
    """``--serve origin|proxy DIR``: one side, in a process of its own (as the test host and the
    egress container are), until killed.  Prints ``ready`` once it listens."""
    from sandbox_gateway.egress.certs import EgressCA, origin_context
    from sandbox_gateway.egress.grants import Grant, Grants
    from sandbox_gateway.egress.policy import parse
    from sandbox_gateway.egress.proxy import EgressProxy, Observer
    from sandbox_gateway.egress.resolve import Resolver
    from testkit.egress import NAMES, Origin, origin_certificates

    async def run() -> None:
        if role == "origin":
            _, origin_tls = origin_certificates(directory)
            await asyncio.start_server(Origin().handle, ORIGIN, 443, ssl=origin_tls)
        else:
            grants = Grants()
            grants.grant(KERNEL, Grant("bench", parse(NAME, setting="bench"), PROXY))
            resolver = Resolver(upstream=None, static={n: (ORIGIN,) for n in NAMES}, denied=[])
            origin_tls = origin_context(str(directory / "origin-ca.pem"))
            proxy = EgressProxy(
                grants, resolver, EgressCA(directory / "ca"), origin_tls, Observer()
            )
            await proxy.serve_tls(PROXY, 443)
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


def start(role: str, directory: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", role, str(directory)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    if child.stdout.readline().strip() != "ready":
        raise SystemExit(f"the {role} did not start")
    return child


def fetch(address: str, context: ssl.SSLContext, path: str) -> tuple[float, float, int]:
    """(seconds to the first byte, seconds in all, bytes of body) of one GET on a new
    connection."""
    started = time.perf_counter()
    raw = socket.create_connection((address, 443), timeout=30, source_address=(KERNEL, 0))
    with context.wrap_socket(raw, server_hostname=NAME) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {NAME}\r\n\r\n".encode())
        head = b""
        first = 0.0
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            if not first:
                first = time.perf_counter() - started
            if not chunk:
                raise SystemExit(f"{address}: the connection closed before an answer")
            head += chunk
        head, _, body = head.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        received = len(body)
        while received < length:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            received += len(chunk)
    return first, time.perf_counter() - started, received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="100 MiB downloads per path")
    parser.add_argument("--connections", type=int, default=200, help="first-byte samples")
    parser.add_argument("--pooled-starts", type=int, default=20, help="pooled starts per kind")
    parser.add_argument("--project", default="mjsbenchegress", help="compose project name")
    parser.add_argument("--serve", nargs=2, metavar=("ROLE", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], Path(args.serve[1]))
        return
    if os.geteuid() != 0:
        raise SystemExit("bench_egress binds port 443 on loopback addresses: run it as root")

    directory = Path(tempfile.mkdtemp(prefix="bench-egress-"))
    children = [start("origin", directory)]
    children.append(start("proxy", directory))
    try:
        report(args, directory)
    finally:
        for child in children:
            child.kill()
            child.wait()
    if args.pooled_starts:
        pooled_report(args.pooled_starts, args.project)


def pooled_report(runs: int, project: str) -> None:
    import bench_pool  # bench/ is on sys.path when run as a script

    from jupyter_kernel_client import GatewayKernelSession

    stack = bench_pool.Stack.create(project, bench_pool.MAX_KERNELS)
    stack.env["SANDBOX_EGRESS_ALLOW"] = NAME
    kinds = {"without a list": {}, f"with a list ({NAME})": {"KERNEL_EGRESS_ALLOW": NAME}}
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    warm_before = stack_warm = 0.0
    with bench_pool.running(stack):
        stack.up(bench_pool.DEFAULT_POOL)
        for i in range(runs + 1):  # the first round warms up
            if i == 1:
                warm_before = stack.metric("sandbox_kernel_starts_total", source="warm")
            for kind, env in kinds.items():
                stack.settle(bench_pool.DEFAULT_POOL)
                session = GatewayKernelSession(
                    stack.gateway_http, stack.gateway_ws, "python3", launch_env=env
                )
                try:
                    timed = bench_pool.start_and_execute(session)
                finally:
                    session.shutdown()
                if i:
                    times[kind].append(timed.total * 1000)
            bench_pool.progress(f"pooled starts: round {i} of {runs}")
        stack.settle(bench_pool.DEFAULT_POOL)
        stack_warm = stack.metric("sandbox_kernel_starts_total", source="warm") - warm_before
    print("\npooled start -> first result, with and without an egress list (Docker)\n")
    print("| start | runs | p50 | p90 |")
    print("|---|---:|---:|---:|")
    for kind, samples in times.items():
        ordered = sorted(samples)
        p90 = ordered[int(0.9 * (len(ordered) - 1))]
        print(f"| {kind} | {len(ordered)} | {statistics.median(ordered):.1f} ms | {p90:.1f} ms |")
    without, with_list = (statistics.median(samples) for samples in times.values())
    ratio = with_list / without
    print(
        f"\n- pooled start with a list <= {POOLED_TARGET} x without: "
        f"{'met' if ratio <= POOLED_TARGET else 'NOT met'} ({ratio:.2f} x)"
    )
    print(f"- {stack_warm:.0f} of {2 * runs} timed starts served warm (gateway metrics)")


def report(args: argparse.Namespace, directory: Path) -> None:
    direct_ctx = ssl.create_default_context(cafile=str(directory / "origin-ca.pem"))
    proxy_ctx = ssl.create_default_context(cafile=str(directory / "ca" / "ca.pem"))
    paths = {"direct": (ORIGIN, direct_ctx), "through the proxy": (PROXY, proxy_ctx)}
    rates: dict[str, list[float]] = {name: [] for name in paths}
    firsts: dict[str, list[float]] = {name: [] for name in paths}
    for address, context in paths.values():
        fetch(address, context, "/bytes/1")  # mint, connect and cache once
    for _ in range(args.runs):
        for name, (address, context) in paths.items():
            _, seconds, size = fetch(address, context, f"/bytes/{100 * MIB}")
            assert size == 100 * MIB, size
            rates[name].append(size / seconds / 1e6)
    for _ in range(args.connections):
        for name, (address, context) in paths.items():
            first, _, _ = fetch(address, context, "/bytes/1")
            firsts[name].append(first * 1000)

    print(f"\negress enforcement point vs direct — {platform.node()}, {os.cpu_count()} CPUs,")
    print(f"load average {os.getloadavg()[0]:.2f}, Python {platform.python_version()}\n")
    print(
        "| path | 100 MiB download, MB/s (median) | new HTTPS connection to first byte, p50 / p90 |"
    )
    print("|---|---:|---:|")
    for name in paths:
        ordered = sorted(firsts[name])
        p90 = ordered[int(0.9 * (len(ordered) - 1))]
        print(
            f"| {name} | {statistics.median(rates[name]):.0f} "
            f"| {statistics.median(ordered):.2f} / {p90:.2f} ms |"
        )
    ratio = statistics.median(rates["through the proxy"]) / statistics.median(rates["direct"])
    added = statistics.median(firsts["through the proxy"]) - statistics.median(firsts["direct"])
    print(
        f"\n- download through the proxy >= {THROUGHPUT_TARGET} x direct: "
        f"{'met' if ratio >= THROUGHPUT_TARGET else 'NOT met'} ({ratio:.2f} x)"
    )
    print(
        f"- first byte + <= {FIRST_BYTE_TARGET_MS} ms p50 over direct: "
        f"{'met' if added <= FIRST_BYTE_TARGET_MS else 'NOT met'} (+{added:.2f} ms)"
    )
    print(f"- {args.runs} downloads and {args.connections} connections per path, interleaved")


if __name__ == "__main__":
    main()
