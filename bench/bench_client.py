"""Client latency, pool, start-up and large-output benchmark: one run, one markdown table.

Starts two Enterprise Gateways from the test venv (``testkit/gateway.py``): *patched* (the
sandbox config, which turns Nagle off on kernel websockets) and *stock* (no config at all), plus
local ipykernels driven over ZMQ by ``jupyter_client`` (the floor).  Every kernel is the same
ipykernel, from the gateway's venv.  Then:

1. ``execute("1+1")`` round trip p50/p99: raw jupyter_client over ZMQ; this client, sync and
   async; a bare websocket-client loop (JSON, and the v1 binary subprotocol); Datalayer's
   ``jupyter-kernel-client`` (own venv, in a subprocess); EG's own ``GatewayClient`` (in the
   gateway venv, in a subprocess).  All are opened first and then run in interleaved rounds, so
   load from other processes falls on every row alike.
2. Pool acquire+release with idle kernels, in the default mode (a fresh kernel per acquire: the
   bench waits, untimed, for the replacements between calls) and with ``reuse=True``; kernel
   start to first result (this client vs raw jupyter_client).
3. 20 MiB of stdout from one execute: wall time and the client's peak memory, every run in a
   fresh subprocess (VmHWM before and after).

    python bench/bench_client.py                    # full run (about 5 minutes)
    python bench/bench_client.py --iterations 50 --pool-cycles 10    # quicker

The script also runs as its own worker (``--worker NAME``) inside other venvs, so module-level
imports are stdlib only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CACHE = Path.home() / ".cache" / "mini-jupyter-sandbox"
DATALAYER_VENV = CACHE / "bench-datalayer"
DATALAYER_REQUIREMENT = "jupyter-kernel-client==1.0.2"
KERNEL_NAME = "python3"
KERNEL_USER = "jovyan"  # Enterprise Gateway refuses kernels for root
CODE = "1+1"
PAYLOAD = 20 * 1024 * 1024
BIG_CODE = "print('x' * (20 * 1024 * 1024))"  # one stream message of PAYLOAD + "\n"
RTT_TARGET = 1.3  # times the raw-ZMQ p50
ACQUIRE_TARGET_MS = 5.0
BIG_TIME_TARGET = 1.5  # times raw jupyter_client
BIG_MEMORY_TARGET = 3.0  # times the payload
WORKER_TIMEOUT = 1800
MIB = 1024 * 1024
MARK = "@@bench "  # prefixes a worker's answers on its stdout
LOCAL = "none (local kernel)"

sys.path.insert(0, str(REPO))  # for testkit.gateway (imported only where needed)


# --- measuring (stdlib only: workers use these too) -------------------------------------------


def time_calls(call: Callable[[], Any], iterations: int, warmup: int) -> list[float]:
    """Milliseconds per call, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def vm_hwm_bytes() -> int:
    """Peak resident set size of this process so far."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise RuntimeError(f"unexpected result: {what}")


# --- table ------------------------------------------------------------------------------------


@dataclass
class Row:
    group: str
    client: str
    gateway: str
    n: int | None = None
    p50: str = ""
    p99: str = ""
    ratio: str = ""
    target: str = ""


def ms(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.0f} µs"
    return f"{value:.1f} ms" if value >= 10 else f"{value:.2f} ms"


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[98]


def verdict(value: float, limit: float, label: str) -> str:
    return f"{label}: {'met' if value <= limit else 'NOT met'}"


def render(rows: list[Row]) -> str:
    header = ["Measurement", "Client", "Gateway", "n", "p50", "p99", "Ratio", "Target"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        n = "" if r.n is None else str(r.n)
        cells = [r.group, r.client, r.gateway, n, r.p50, r.p99, r.ratio, r.target]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- components -------------------------------------------------------------------------------


def eg_python() -> Path:
    from testkit.gateway import gateway_venv

    return gateway_venv() / "bin" / "python"


@contextlib.contextmanager
def gateways() -> Iterator[dict[str, Any]]:
    """The patched (sandbox config) and the stock gateway, both stopped on exit."""
    from testkit.gateway import Gateway

    started: dict[str, Any] = {}
    try:
        # The 20 MiB output rows measure a transfer, not the gateway's message bound (16m by
        # default, which would cut it): the bound is raised above the payload.
        started["patched EG"] = Gateway(env={"SANDBOX_MAX_MESSAGE_BYTES": "64m"}).start()
        started["stock EG"] = Gateway(config=None).start()
        yield started
    finally:
        for gateway in started.values():
            gateway.stop()


@contextlib.contextmanager
def local_kernel(python: Path) -> Iterator[Any]:
    """A local ipykernel run by ``python`` under a jupyter_client KernelManager."""
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    with tempfile.TemporaryDirectory(prefix="bench-kernels-") as kernels:
        spec = Path(kernels) / "bench-python"
        spec.mkdir()
        argv = [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        (spec / "kernel.json").write_text(
            json.dumps({"argv": argv, "display_name": "bench", "language": "python"})
        )
        specs = KernelSpecManager(kernel_dirs=[kernels], ensure_native_kernel=False)
        manager = KernelManager(kernel_name="bench-python", kernel_spec_manager=specs)
        manager.start_kernel()
        try:
            yield manager
        finally:
            manager.shutdown_kernel(now=True)
            manager.cleanup_resources()


@contextlib.contextmanager
def blocking_client(manager_or_file: Any) -> Iterator[Any]:
    """A started, ready BlockingKernelClient for a KernelManager or a connection file."""
    if isinstance(manager_or_file, str):
        from jupyter_client import BlockingKernelClient

        client = BlockingKernelClient(connection_file=manager_or_file)
        client.load_connection_file()
    else:
        client = manager_or_file.blocking_client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        yield client
    finally:
        client.stop_channels()


def raw_execute(client: Any, code: str, timeout: float = 120) -> str:
    """execute_request over ZMQ; done at its execute_reply and its idle status; returns stdout."""
    msg_id = client.execute(code)
    while client.get_shell_msg(timeout=timeout)["parent_header"].get("msg_id") != msg_id:
        pass
    chunks = []
    while True:
        message = client.get_iopub_msg(timeout=timeout)
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = message["header"]["msg_type"], message["content"]
        if kind == "stream":
            chunks.append(content["text"])
        elif kind == "status" and content["execution_state"] == "idle":
            return "".join(chunks)


@contextlib.contextmanager
def rest_kernel(gateway: Any) -> Iterator[str]:
    """A kernel started with a plain REST call (owned by the bench, deleted on exit)."""
    import requests

    body = {"name": KERNEL_NAME, "env": {"KERNEL_USERNAME": KERNEL_USER}}
    response = requests.post(gateway.http + "/api/kernels", json=body, timeout=120)
    response.raise_for_status()
    kernel_id = response.json()["id"]
    try:
        yield kernel_id
    finally:
        requests.delete(f"{gateway.http}/api/kernels/{kernel_id}", timeout=60)


def datalayer_python() -> Path:
    """Datalayer's jupyter-kernel-client in its own venv (same import name as this client)."""
    python = DATALAYER_VENV / "bin" / "python"
    marker = DATALAYER_VENV / ".complete"
    if not marker.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(DATALAYER_VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q", DATALAYER_REQUIREMENT]
        subprocess.run(pip, check=True)
        marker.touch()
    return python


# --- 1. execute round trip --------------------------------------------------------------------
#
# Every client is opened first; then all of them run in interleaved rounds of ROUND executes, so
# that load from other processes on the machine falls on every row alike.

Batch = Callable[[int], list[float]]
"""Run n timed ``execute("1+1")`` round trips; milliseconds each."""
ROUND = 10


@contextlib.contextmanager
def raw_zmq_client() -> Iterator[Batch]:
    with local_kernel(eg_python()) as manager, blocking_client(manager) as client:
        expect(raw_execute(client, "print(1+1)") == "2\n", "raw execute")
        yield lambda n: time_calls(lambda: raw_execute(client, CODE), n, 0)


@contextlib.contextmanager
def sync_client(gateway: Any) -> Iterator[Batch]:
    from jupyter_kernel_client import GatewayKernelSession

    with GatewayKernelSession(gateway.http, gateway.ws, KERNEL_NAME) as session:
        expect(str(session.execute(CODE)) == "2", "sync execute('1+1') != 2")
        yield lambda n: time_calls(lambda: session.execute(CODE), n, 0)


@contextlib.contextmanager
def async_client(gateway: Any) -> Iterator[Batch]:
    from jupyter_kernel_client import AsyncGatewayKernelSession

    session = AsyncGatewayKernelSession(gateway.http, gateway.ws, KERNEL_NAME)

    async def batch(n: int) -> list[float]:
        samples = []
        for _ in range(n):
            start = time.perf_counter()
            await session.execute(CODE)
            samples.append((time.perf_counter() - start) * 1000)
        return samples

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(session.start())
        result = loop.run_until_complete(session.execute(CODE))
        expect(str(result) == "2", "async execute('1+1') != 2")
        yield lambda n: loop.run_until_complete(batch(n))
    finally:
        loop.run_until_complete(session.shutdown())
        loop.close()


def ws_execute(ws: Any, session_id: str, code: str) -> None:
    """One execute over a bare websocket-client connection (no TCP_QUICKACK)."""
    msg_id = uuid.uuid4().hex
    header = {
        "msg_id": msg_id,
        "msg_type": "execute_request",
        "username": KERNEL_USER,
        "session": session_id,
        "version": "5.3",
    }
    content = {"code": code, "silent": False, "store_history": True, "user_expressions": {}}
    message = {"header": header, "parent_header": {}, "metadata": {}, "content": content}
    ws.send(json.dumps({**message, "channel": "shell", "buffers": []}))
    replied = idle = False
    while not (replied and idle):
        message = json.loads(ws.recv())
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        replied = replied or message["msg_type"] == "execute_reply"
        state = message["content"].get("execution_state") if message["msg_type"] == "status" else ""
        idle = idle or state == "idle"


@contextlib.contextmanager
def plain_ws_client(gateway: Any) -> Iterator[Batch]:
    import websocket

    session_id = uuid.uuid4().hex
    with rest_kernel(gateway) as kernel_id:
        url = f"{gateway.ws}/api/kernels/{kernel_id}/channels?session_id={session_id}"
        ws = websocket.create_connection(url, timeout=120)
        try:
            ws_execute(ws, session_id, CODE)
            yield lambda n: time_calls(lambda: ws_execute(ws, session_id, CODE), n, 0)
        finally:
            ws.close()


@contextlib.contextmanager
def plain_ws_v1_client(gateway: Any) -> Iterator[Batch]:
    import websocket

    session_id = uuid.uuid4().hex
    with rest_kernel(gateway) as kernel_id:
        url = f"{gateway.ws}/api/kernels/{kernel_id}/channels?session_id={session_id}"
        ws = websocket.create_connection(url, timeout=120, subprotocols=[V1_PROTOCOL])
        try:
            expect(ws.getsubprotocol() == V1_PROTOCOL, "the gateway did not select v1")
            expect(v1_execute(ws, session_id, "print(1+1)") == "2\n", "v1 execute")
            yield lambda n: time_calls(lambda: v1_execute(ws, session_id, CODE), n, 0)
        finally:
            ws.close()


@contextlib.contextmanager
def worker_client(python: Path, name: str, **params: Any) -> Iterator[tuple[Batch, str]]:
    """A client living in a ``--worker`` subprocess that times batches on request."""
    command = [str(python), str(Path(__file__).resolve()), "--worker", name, json.dumps(params)]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    def answer() -> Any:
        for line in stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK) :])
        raise RuntimeError(f"worker {name} exited ({proc.wait()}); its stderr is above")

    def batch(n: int) -> list[float]:
        stdin.write(f"{n}\n")
        stdin.flush()
        samples: list[float] = answer()
        return samples

    try:
        ready = answer()
        yield batch, ready["version"]
    finally:
        with contextlib.suppress(OSError):
            stdin.close()  # the worker cleans up and exits at end of input
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def datalayer_client(gateway: Any) -> Iterator[tuple[Batch, str]]:
    # Its start_kernel() sends no env, so EG would launch the kernel for root and refuse it:
    # the bench starts the kernel with KERNEL_USERNAME and Datalayer's client attaches to it.
    python = datalayer_python()
    with rest_kernel(gateway) as kernel_id:
        worker = worker_client(python, "datalayer-rtt", http=gateway.http, kernel_id=kernel_id)
        with worker as client:
            yield client


@contextlib.contextmanager
def eg_gateway_client(gateway: Any) -> Iterator[tuple[Batch, str]]:
    with worker_client(eg_python(), "eg-rtt", port=gateway.port) as client:
        yield client


def serve_batches(execute: Callable[[], Any], version: str) -> None:
    """Worker side of :func:`worker_client`: one line ``n`` in, n timings out, until EOF."""
    print(MARK + json.dumps({"version": version}), flush=True)
    for line in sys.stdin:
        print(MARK + json.dumps(time_calls(execute, int(line), 0)), flush=True)


def worker_datalayer_rtt(params: dict[str, Any]) -> None:
    from importlib.metadata import version

    from jupyter_kernel_client import JupyterKernelClient

    client = JupyterKernelClient(
        server_url=params["http"], token=None, kernel_id=params["kernel_id"], username=KERNEL_USER
    )
    client.start()
    try:
        reply = client.execute(CODE)
        expect(reply["outputs"][0]["data"]["text/plain"] == "2", f"Datalayer reply {reply}")
        serve_batches(lambda: client.execute(CODE), version("jupyter-kernel-client"))
    finally:
        client.stop(shutdown_kernel=False)


def worker_eg_rtt(params: dict[str, Any]) -> None:
    from importlib.metadata import version

    from enterprise_gateway.client.gateway_client import GatewayClient

    gateway = GatewayClient(host=f"127.0.0.1:{params['port']}")
    gateway.log.setLevel(logging.WARNING)  # it sets INFO on its logger and logs every start
    kernel = gateway.start_kernel(KERNEL_NAME, username=KERNEL_USER)
    try:
        output, failed = kernel.execute(CODE)
        expect(output == "2" and not failed, f"GatewayClient output {output!r}")
        serve_batches(lambda: kernel.execute(CODE), version("jupyter_enterprise_gateway"))
    finally:
        gateway.shutdown_kernel(kernel)


@dataclass
class Contender:
    client: str
    gateway: str
    batch: Batch | None  # None: could not be opened (the reason is in the notes)
    ours: bool = False
    samples: list[float] = field(default_factory=list)


def open_contenders(
    stack: contextlib.ExitStack, gws: dict[str, Any], notes: list[str]
) -> list[Contender]:
    contenders = [
        Contender("raw jupyter_client, ZMQ (floor)", LOCAL, stack.enter_context(raw_zmq_client()))
    ]
    for name, gateway in gws.items():
        contenders += [
            Contender("this client, sync", name, stack.enter_context(sync_client(gateway)), True),
            Contender("this client, async", name, stack.enter_context(async_client(gateway)), True),
            Contender(
                "plain websocket-client loop", name, stack.enter_context(plain_ws_client(gateway))
            ),
        ]
        if name == "patched EG":
            v1 = stack.enter_context(plain_ws_v1_client(gateway))
            contenders.append(Contender("plain websocket-client, v1 subprotocol", name, v1))
        for label, opener in (
            ("Datalayer jupyter-kernel-client", datalayer_client),
            ("EG GatewayClient", eg_gateway_client),
        ):
            try:
                batch, version = stack.enter_context(opener(gateway))
            except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
                notes.append(f"{label} against {name} could not be measured: {exc}")
                contenders.append(Contender(label, name, None))
                continue
            contenders.append(Contender(f"{label} {version}", name, batch))
    return contenders


def round_trip_rows(gws: dict[str, Any], args: argparse.Namespace, notes: list[str]) -> list[Row]:
    with contextlib.ExitStack() as stack:
        contenders = open_contenders(stack, gws, notes)
        running = [c for c in contenders if c.batch is not None]
        for c in running:
            c.batch(args.warmup)  # type: ignore[misc]
        for done in range(0, args.iterations, ROUND):
            for c in running:
                c.samples += c.batch(min(ROUND, args.iterations - done))  # type: ignore[misc]
    floor = statistics.median(contenders[0].samples)
    rows = []
    for c in contenders:
        if not c.samples:
            rows.append(Row("execute `1+1` round trip", c.client, c.gateway, p50="not measured"))
            continue
        p50 = statistics.median(c.samples)
        goal = verdict(p50 / floor, RTT_TARGET, f"≤ {RTT_TARGET}x floor") if c.ours else ""
        rows.append(
            Row(
                "execute `1+1` round trip",
                c.client,
                c.gateway,
                len(c.samples),
                ms(p50),
                ms(p99(c.samples)),
                f"{p50 / floor:.2f}x floor",
                goal,
            )
        )
    return rows


# --- 2. pool acquire, kernel start to first result --------------------------------------------


POOL_SIZE = 2
POOL_READY_TIMEOUT = 120.0


def pool_acquire(gateway: Any, args: argparse.Namespace, *, reuse: bool) -> list[float]:
    """Milliseconds of ``release(acquire())`` with ``POOL_SIZE`` kernels ready.

    With ``reuse=True`` the same kernels go round, so calls follow each other.  By default each
    release shuts its kernel down and starts a replacement in the background: before every
    timed call the bench waits, untimed, until the pool has its kernels ready again, so the
    call is what the row says, an acquire from idle kernels and a release.
    """
    from jupyter_kernel_client import KernelSessionPool

    pool = KernelSessionPool(
        gateway.http,
        gateway.ws,
        KERNEL_NAME,
        size=POOL_SIZE,
        reuse=reuse,
        health_check_interval=None,
    )
    with pool:
        if reuse:
            return time_calls(lambda: pool.release(pool.acquire()), args.iterations, args.warmup)
        samples = []
        for cycle in range(args.pool_cycles + 1):  # the first is a warm-up
            wait_until_ready(pool)
            start = time.perf_counter()
            pool.release(pool.acquire())
            if cycle:
                samples.append((time.perf_counter() - start) * 1000)
        return samples


def wait_until_ready(pool: Any) -> None:
    """Until the pool has ``POOL_SIZE`` idle kernels and no shutdown left to do."""
    ready = {"idle": POOL_SIZE, "in_use": 0, "total": POOL_SIZE, "shutting_down": 0}
    deadline = time.monotonic() + POOL_READY_TIMEOUT
    while pool.stats != ready:
        expect(time.monotonic() < deadline, f"pool not ready after {POOL_READY_TIMEOUT:g} s")
        time.sleep(0.01)


def start_to_result_ours(gateway: Any) -> float:
    from jupyter_kernel_client import GatewayKernelSession

    start = time.perf_counter()
    session = GatewayKernelSession(gateway.http, gateway.ws, KERNEL_NAME)
    try:
        session.start()
        expect(str(session.execute(CODE)) == "2", "first result != 2")
        return (time.perf_counter() - start) * 1000
    finally:
        session.shutdown()


def start_to_result_raw(python: Path) -> float:
    start = time.perf_counter()
    with local_kernel(python) as manager, blocking_client(manager) as client:
        expect(raw_execute(client, "print(1+1)") == "2\n", "first result != 2")
        return (time.perf_counter() - start) * 1000


def startup_rows(gateway: Any, name: str, args: argparse.Namespace) -> list[Row]:
    acquire_goal = f"p50 ≤ {ACQUIRE_TARGET_MS:g} ms"
    rows = []
    for reuse, client in (
        (False, "KernelSessionPool (sync), fresh kernel per acquire (default)"),
        (True, "KernelSessionPool (sync), reuse=True"),
    ):
        acquire = pool_acquire(gateway, args, reuse=reuse)
        acquire_p50 = statistics.median(acquire)
        rows.append(
            Row(
                "pool acquire + release, idle kernels",
                client,
                name,
                len(acquire),
                ms(acquire_p50),
                ms(p99(acquire)),
                "",
                verdict(acquire_p50, ACQUIRE_TARGET_MS, acquire_goal),
            )
        )
    python = eg_python()
    ours, raw = [], []
    for _ in range(args.starts + 1):  # alternating; the first of each is a warm-up
        ours.append(start_to_result_ours(gateway))
        raw.append(start_to_result_raw(python))
    ours, raw = ours[1:], raw[1:]
    group = "kernel start → first result"
    raw_p50 = statistics.median(raw)
    rows += [
        Row(
            group,
            "raw jupyter_client (KernelManager)",
            LOCAL,
            len(raw),
            ms(raw_p50),
            ms(p99(raw)),
            "1.00x raw",
        ),
        Row(
            group,
            "this client, sync (start + execute)",
            name,
            len(ours),
            ms(statistics.median(ours)),
            ms(p99(ours)),
            f"{statistics.median(ours) / raw_p50:.2f}x raw",
        ),
    ]
    return rows


# --- 3. 20 MiB of stdout ----------------------------------------------------------------------
#
# One run per fresh worker process, the clients alternating: the worker's VmHWM growth during the
# execute is the client's peak memory for it.  The kernels belong to the main process.  A bare
# websocket client on the "v1.kernel.websocket.jupyter.org" subprotocol is measured as well: with
# it the gateway forwards the kernel's frames as they are, instead of verifying, parsing and
# re-encoding every message as JSON (the default protocol, which this client speaks).

V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"


def report_big(execute_big: Callable[[], str]) -> None:
    """Worker side: time one 20 MiB execute and the process's peak memory growth during it."""
    before = vm_hwm_bytes()
    start = time.perf_counter()
    stdout = execute_big()
    elapsed = (time.perf_counter() - start) * 1000
    growth = vm_hwm_bytes() - before
    expect(len(stdout) == PAYLOAD + 1, f"stdout of {len(stdout)} characters")
    print(MARK + json.dumps({"ms": elapsed, "growth": growth}))


def worker_big_ours(params: dict[str, Any]) -> None:
    from jupyter_kernel_client import GatewayKernelSession

    session = GatewayKernelSession(
        params["http"], params["ws"], KERNEL_NAME, kernel_id=params["kernel_id"]
    )
    with session:
        session.execute(CODE)
        report_big(lambda: session.execute(BIG_CODE, timeout=300).stdout)


def worker_big_raw(params: dict[str, Any]) -> None:
    with blocking_client(params["connection_file"]) as client:
        raw_execute(client, CODE)
        report_big(lambda: raw_execute(client, BIG_CODE, timeout=300))


def v1_frame(channel: str, parts: list[bytes]) -> bytes:
    """A v1 kernel-websocket frame: count and offsets (uint64 LE), channel, message parts."""
    offsets = [8 * (len(parts) + 3), 8 * (len(parts) + 3) + len(channel)]
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    head = [len(offsets).to_bytes(8, "little"), *(o.to_bytes(8, "little") for o in offsets)]
    return b"".join([*head, channel.encode(), *parts])


def v1_parts(frame: bytes) -> list[bytes]:
    """header, parent_header, metadata, content (and buffers) of a v1 frame."""
    count = int.from_bytes(frame[:8], "little")
    offsets = [int.from_bytes(frame[8 * i : 8 * i + 8], "little") for i in range(1, count + 1)]
    return [frame[offsets[i] : offsets[i + 1]] for i in range(1, count - 1)]


def v1_execute(ws: Any, session_id: str, code: str) -> str:
    """One execute over a bare websocket-client on the v1 subprotocol; returns stdout."""
    msg_id = uuid.uuid4().hex
    header = {
        "msg_id": msg_id,
        "msg_type": "execute_request",
        "username": KERNEL_USER,
        "session": session_id,
        "version": "5.3",
    }
    content = {"code": code, "silent": False, "store_history": True, "user_expressions": {}}
    ws.send_binary(v1_frame("shell", [json.dumps(p).encode() for p in (header, {}, {}, content)]))
    replied = idle = False
    chunks = []
    while not (replied and idle):
        parts = v1_parts(ws.recv_data()[1])
        if json.loads(parts[1]).get("msg_id") != msg_id:
            continue
        kind = json.loads(parts[0])["msg_type"]
        replied = replied or kind == "execute_reply"
        if kind == "stream":
            chunks.append(json.loads(parts[3])["text"])
        elif kind == "status":
            idle = idle or json.loads(parts[3])["execution_state"] == "idle"
    return "".join(chunks)


def worker_big_v1(params: dict[str, Any]) -> None:
    import websocket

    session_id = uuid.uuid4().hex
    url = f"{params['ws']}/api/kernels/{params['kernel_id']}/channels?session_id={session_id}"
    ws = websocket.create_connection(url, timeout=300, subprotocols=[V1_PROTOCOL])
    try:
        expect(ws.getsubprotocol() == V1_PROTOCOL, "the gateway did not select the v1 protocol")
        v1_execute(ws, session_id, CODE)
        report_big(lambda: v1_execute(ws, session_id, BIG_CODE))
    finally:
        ws.close()


def run_worker(name: str, **params: Any) -> dict[str, Any]:
    """Run this script as ``--worker name`` in a fresh process; return its one answer."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", name, json.dumps(params)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=WORKER_TIMEOUT)
    answers = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
    if done.returncode != 0 or not answers:
        raise RuntimeError(f"worker {name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(answers[-1][len(MARK) :])
    return result


def big_output_rows(gateway: Any, name: str, args: argparse.Namespace) -> list[Row]:
    raw, ours, v1 = "raw jupyter_client, ZMQ", "this client, sync", "plain websocket-client, v1"
    runs: dict[str, list[dict[str, Any]]] = {raw: [], ours: [], v1: []}
    with local_kernel(eg_python()) as manager, rest_kernel(gateway) as kernel_id:
        on_gateway = {"http": gateway.http, "ws": gateway.ws, "kernel_id": kernel_id}
        for _ in range(args.big_runs):
            runs[raw].append(run_worker("big-raw", connection_file=manager.connection_file))
            runs[ours].append(run_worker("big-ours", **on_gateway))
            runs[v1].append(run_worker("big-v1", **on_gateway))
    where = {raw: LOCAL, ours: name, v1: f"{name}, v1 subprotocol"}
    raw_p50 = statistics.median(r["ms"] for r in runs[raw])
    rows = []
    for client, results in runs.items():
        p50 = statistics.median(r["ms"] for r in results)
        goal = f"≤ {BIG_TIME_TARGET}x raw"
        rows.append(
            Row(
                "20 MiB stdout, one execute: wall time",
                client,
                where[client],
                len(results),
                ms(p50),
                "",
                f"{p50 / raw_p50:.2f}x raw",
                verdict(p50 / raw_p50, BIG_TIME_TARGET, goal) if client == ours else "",
            )
        )
    for client, results in runs.items():
        growth = max(r["growth"] for r in results)
        goal = f"≤ {BIG_MEMORY_TARGET:g}x payload"
        rows.append(
            Row(
                "20 MiB stdout: client peak memory (max ΔVmHWM)",
                client,
                where[client],
                len(results),
                f"+{growth / MIB:.0f} MiB",
                "",
                f"{growth / PAYLOAD:.2f}x payload",
                verdict(growth / PAYLOAD, BIG_MEMORY_TARGET, goal) if client == ours else "",
            )
        )
    return rows


# --- report -----------------------------------------------------------------------------------


def machine_info() -> list[str]:
    from importlib.metadata import version

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
        platform.processor(),
    )
    probe = (
        "import importlib.metadata as m; "
        "print(m.version('jupyter_enterprise_gateway'), m.version('ipykernel'))"
    )
    eg, ipykernel = subprocess.run(
        [str(eg_python()), "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    return [
        f"- {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {platform.node()}: {cpu}, "
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}, jupyter_client {version('jupyter_client')}, "
        f"websocket-client {version('websocket-client')}, aiohttp {version('aiohttp')}",
        f"- Enterprise Gateway {eg} with local kernels; every kernel (behind the gateways and "
        f"for raw ZMQ) is ipykernel {ipykernel} from the gateway's venv",
    ]


def load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--iterations", type=int, default=200, help="timed round trips per row")
    parser.add_argument("--warmup", type=int, default=20, help="untimed round trips first")
    parser.add_argument("--starts", type=int, default=10, help="timed kernel starts per row")
    parser.add_argument(
        "--pool-cycles",
        type=int,
        default=50,
        help="timed acquire+release of the default pool (each costs a kernel start, untimed)",
    )
    parser.add_argument("--big-runs", type=int, default=3, help="20 MiB executes per row")
    parser.add_argument("--worker", nargs=2, metavar=("NAME", "JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, params = args.worker
        WORKERS[name](json.loads(params))
        return

    header = [
        "## jupyter_kernel_client benchmark",
        "",
        *machine_info(),
        f"- load average (1/5/15 min) at start: {load()}",
    ]
    notes: list[str] = []
    with gateways() as gws:
        rows = round_trip_rows(gws, args, notes)
        rows += startup_rows(gws["patched EG"], "patched EG", args)
        rows += big_output_rows(gws["patched EG"], "patched EG", args)
    header.append(f"- load average at end: {load()}")
    print(*header, "", render(rows), sep="\n")
    if notes:
        print("\nNotes:", *(f"- {note}" for note in notes), sep="\n")


WORKERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "datalayer-rtt": worker_datalayer_rtt,
    "eg-rtt": worker_eg_rtt,
    "big-ours": worker_big_ours,
    "big-raw": worker_big_raw,
    "big-v1": worker_big_v1,
}

if __name__ == "__main__":
    main()
