"""The gateway's warm pool: start to first result beside cold starts, peers, idle cost and load.

One run, one markdown table.  The bench brings up a compose project of its own (``--project``,
default ``mjsbench``: the gateway and the kernel-image check only, on a free port, with
``SANDBOX_MAX_KERNELS=80`` and ``SANDBOX_KERNEL_MEMORY=256m``) and tears it down at the end, also
on Ctrl-C, SIGTERM or an error.  Rows:

1. warm start -> first result: ``GatewayKernelSession.start()`` + ``execute("1+1")`` of
   "python3" with the compose default pool (``python3=2``), one at a time; before each start the
   bench waits, untimed, until the pool is full again and the previous kernel is gone.  Shutdown
   is not timed.
2. the same, ``--parallel`` (20) at once, released by a barrier, after the gateway was recreated
   with a pool of that size; ``--rounds`` (3) rounds, the pool refilled between them.
3. cold start -> first result: "sandbox-python" (no pool), one at a time.
4. ``docker run --rm <kernel image> true``: the floor of any container start.
   Rows 1, 3 and 4 are interleaved, so that load from elsewhere falls on all three alike.
5. peers' published figures, quoted (not measured here).
6. memory of each idle pooled kernel (``docker stats``), the pool of 20 full, nothing claimed.
7. CPU of the gateway and of the pooled kernels over ``--idle-seconds`` (30) with the pool full
   (the containers' cgroup CPU counters before and after).
8. load: ``--load-sessions`` (50) sessions x ``--load-executes`` (100) executes, one thread per
   session, all at once; each execute prints its session's token and the iteration number, and
   every output is checked against both.  Beside it, the same pattern through jupyter_client over
   ZMQ on as many local ipykernels of this Python (the floor); the two alternate in
   ``--load-rounds`` (2) rounds.  The CPU of the gateway, the kernels, Docker's port proxy, this
   process and the whole machine is read across each round.

Rows 1 and 2 also split each start into ``start()`` and the first execute, and give the
gateway's CPU per start.

    python bench/bench_pool.py            # full run: about 10 minutes on 2 cores
    python bench/bench_pool.py --runs 5 --cold-runs 3 --docker-runs 3 --rounds 1 \\
        --idle-seconds 10 --load-sessions 10 --load-executes 20     # quick
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar

import bench_client  # bench/ is on sys.path when run as a script (it puts the repo root there)
import requests

from jupyter_kernel_client import GatewayKernelSession
from testkit.compose import ComposeProject, compose_command, docker, write_tenants
from testkit.gateway import free_port

VERSION = os.environ.get("SANDBOX_VERSION", "0.1.0")
KERNEL_IMAGE = f"mini-jupyter-sandbox/kernel-python:{VERSION}"
POOL_USER_LABEL = "mini-jupyter-sandbox.kernel-username=sandbox-pool"
POOLED = "python3"
UNPOOLED = "sandbox-python"  # no pool unless SANDBOX_POOL names it
MAX_KERNELS = 80
KERNEL_MEMORY = "256m"
DEFAULT_POOL = 2  # the compose default, python3=2
CHECK_INTERVAL = 10  # SANDBOX_POOL_CHECK_INTERVAL, the compose default
WARM_TARGET_MS = 50.0
PARALLEL_TARGET_MS = 130.0
LOAD_TARGET = 0.5  # gateway executes/s over raw ZMQ executes/s
SETTLE_TIMEOUT = 300.0
MIB = 1024 * 1024

# Published figures of other sandboxes; nothing here re-measures them.
PEERS = [
    (
        "kubernetes-sigs/agent-sandbox: warm claim → Ready, one at a time",
        "50-64 ms",
        "warm claim Ready 50-64 ms p50 one at a time (a published third-party measurement of "
        "v1.0.3; roadmap target 50 ms)",
    ),
    (
        "kubernetes-sigs/agent-sandbox: warm claim → Ready, 20 in parallel",
        "124-137 ms",
        "124-137 ms p50 at 20 in parallel (same measurement, v1.0.3)",
    ),
    ("E2B: create → first execution", "442-467 ms", "create → first execution 442-467 ms p50"),
    ("Daytona", "663 ms", "663 ms p50"),
]


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def p50(samples: list[float]) -> float:
    return statistics.median(samples)


def p99(samples: list[float]) -> float:
    return bench_client.p99(samples) if len(samples) > 1 else samples[0]


def ms(seconds: float) -> str:
    return bench_client.ms(seconds * 1000)


def load_average() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


# --- the compose project ----------------------------------------------------------------------


@dataclass
class Stack(ComposeProject):
    """The bench's compose project: the gateway (and the kernel-image check), nothing else."""

    compose_timeout: ClassVar[float] = 600

    @classmethod
    def create(cls, project: str, max_kernels: int) -> Stack:
        compose = compose_command()
        if compose is None:
            raise SystemExit("no docker-compose / docker compose found")
        tokens = {name: secrets.token_hex(16) for name in ("bench", "notebook")}
        stack = cls(project, compose, dict(os.environ), free_port(), tokens["bench"])
        tenants = write_tenants(
            Path(tempfile.mkdtemp(prefix=f"{project}-")) / "tenants.json", tokens, "bench"
        )
        # The sessions of this process act as tenant "bench" (the client's default token).
        os.environ["JUPYTER_GATEWAY_AUTH_TOKEN"] = tokens["bench"]
        # Explicit values for everything that shapes the measurement: the process environment
        # wins over a developer's .env.
        stack.env.update(
            {
                "SANDBOX_VERSION": VERSION,
                "GATEWAY_PORT": str(stack.gateway_port),
                "NOTEBOOK_PORT": str(free_port()),
                "FILE_SERVER_PORT": str(free_port()),
                "FILE_SERVER_TOKEN": secrets.token_hex(16),  # compose refuses to start without
                "SANDBOX_TENANTS_FILE_HOST": str(tenants),
                "NOTEBOOK_GATEWAY_TOKEN": tokens["notebook"],
                "SANDBOX_EGRESS_CONTROL_TOKEN": secrets.token_hex(16),
                "SANDBOX_SHARED_VOLUME": f"{project}-shared",
                "SANDBOX_BIND_ADDRESS": "127.0.0.1",
                "SANDBOX_MAX_KERNELS": str(max_kernels),
                "SANDBOX_MAX_KERNELS_PER_USER": "",
                "SANDBOX_KERNEL_MEMORY": KERNEL_MEMORY,
                "SANDBOX_KERNEL_CPUS": "1",
                "SANDBOX_ALLOWED_KERNEL_IMAGES": "",
                "SANDBOX_CULL_IDLE_TIMEOUT": "3600",
                "SANDBOX_POOL": f"{POOLED}={DEFAULT_POOL}",
                "SANDBOX_POOL_MAX_AGE": "3600",
                "SANDBOX_POOL_CHECK_INTERVAL": str(CHECK_INTERVAL),
            }
        )
        return stack

    def up(self, pool_size: int) -> None:
        """(Re)create the gateway with a python3 pool of ``pool_size``; wait until it is full."""
        self.env["SANDBOX_POOL"] = f"{POOLED}={pool_size}"
        done = self.run_compose("up", "-d", "--no-build", "gateway")
        if done.returncode != 0:
            raise RuntimeError(f"compose up failed:\n{done.stdout}\n{done.stderr}")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                response = requests.get(
                    f"{self.gateway_http}/api/kernelspecs", headers=self.auth, timeout=2
                )
                if response.status_code == 200:
                    break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"gateway not up after 180 s:\n{self.logs()}")
        self.settle(pool_size)

    def logs(self) -> str:
        return self.run_compose("logs", "--tail=60", "gateway").stdout

    @property
    def shared_volume(self) -> str:
        return self.env["SANDBOX_SHARED_VOLUME"]

    def gateway_container(self) -> str:
        """The gateway's full container id."""
        return docker("inspect", "-f", "{{.Id}}", self.container("gateway")).strip()

    def kernel_containers(self, pooled_only: bool = False) -> list[str]:
        """Full ids of this project's running kernel containers (pooled ones: never claimed)."""
        return self.kernel_container_ids(*([POOL_USER_LABEL] if pooled_only else []))

    def settle(self, pool_size: int, held: int = 0, timeout: float = SETTLE_TIMEOUT) -> None:
        """Until the pool is full, nothing is starting, and exactly ``pool_size + held`` kernel
        containers run (the last claimed kernel's container is gone)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                ready = self.metric("sandbox_pool_kernels", kernelspec=POOLED, state="ready")
                starting = self.metric("sandbox_pool_kernels", kernelspec=POOLED, state="starting")
                if (
                    ready == pool_size
                    and starting == 0
                    and len(self.kernel_containers()) == pool_size + held
                ):
                    return
            time.sleep(0.25)
        raise RuntimeError(
            f"the pool did not settle at {pool_size} ready (+{held} held) in {timeout:.0f} s\n"
            f"{self.logs()}"
        )


# --- cgroup counters --------------------------------------------------------------------------


def cgroup_file(container: str, v1: tuple[str, str], v2: str) -> Path | None:
    """A container's cgroup file, cgroup v2 or v1, systemd or cgroupfs driver."""
    controller, name = v1
    for candidate in (
        f"/sys/fs/cgroup/system.slice/docker-{container}.scope/{v2}",
        f"/sys/fs/cgroup/docker/{container}/{v2}",
        f"/sys/fs/cgroup/{controller}/docker/{container}/{name}",
        f"/sys/fs/cgroup/{controller}/system.slice/docker-{container}.scope/{name}",
    ):
        if Path(candidate).exists():
            return Path(candidate)
    return None


def cpu_seconds(containers: list[str]) -> dict[str, float]:
    """CPU time used so far by each container whose cgroup is readable here."""
    used = {}
    for container in containers:
        path = cgroup_file(container, ("cpuacct", "cpuacct.usage"), "cpu.stat")
        with contextlib.suppress(OSError):
            if path is None:
                continue
            text = path.read_text()
            if path.name == "cpu.stat":
                usec = next(line for line in text.splitlines() if line.startswith("usage_usec"))
                used[container] = int(usec.split()[1]) / 1e6
            else:
                used[container] = int(text) / 1e9
    return used


def used_between(before: dict[str, float], after: dict[str, float]) -> float | None:
    common = before.keys() & after.keys()
    return sum(after[c] - before[c] for c in common) if common else None


def process_cpu_seconds(pid: int) -> float | None:
    with contextlib.suppress(OSError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return None


def machine_busy_seconds() -> float:
    """CPU time all cores of the machine spent busy so far (``/proc/stat``), any process."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def proxy_pids(port: int) -> list[int]:
    """Docker's userland proxies of a published port: every byte to the gateway passes them."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if argv[0].endswith(b"docker-proxy") and str(port).encode() in argv:
                pids.append(int(entry.name))
    return pids


def parse_size(text: str) -> float:
    """Bytes of a ``docker stats`` size such as ``45.3MiB`` or ``1.2GB``."""
    units = {"B": 1, "KIB": 1024, "MIB": MIB, "GIB": 1024**3, "KB": 1e3, "MB": 1e6, "GB": 1e9}
    text = text.strip()
    number = text.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    return float(number) * units[text[len(number) :].upper()]


def memory_usage(containers: list[str]) -> dict[str, float]:
    """``docker stats`` MEM USAGE of each container, bytes."""
    out = docker("stats", "--no-stream", "--format", "{{.ID}}\t{{.MemUsage}}", *containers)
    usage = {}
    for line in out.splitlines():
        short, _, mem = line.partition("\t")
        usage[short] = parse_size(mem.split("/")[0])
    return usage


# --- rows -------------------------------------------------------------------------------------


@dataclass
class Row:
    number: str
    measurement: str
    n: str = ""
    p50: str = ""
    p99: str = ""
    other: str = ""
    target: str = ""


def render(rows: list[Row]) -> str:
    header = ["#", "Measurement", "n", "p50", "p99", "Other", "Target"]
    lines = ["| " + " | ".join(header) + " |", "|---|---|---:|---:|---:|---|---|"]
    for r in rows:
        cells = [r.number, r.measurement, r.n, r.p50, r.p99, r.other, r.target]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def quietly(call: Callable[[], Any]) -> Callable[[], None]:
    """``call`` with its exceptions swallowed (clean-up that must not hide the real error)."""

    def run() -> None:
        with contextlib.suppress(Exception):
            call()

    return run


def verdict(met: bool, label: str) -> str:
    return f"{label}: {'met' if met else 'NOT met'}"


@dataclass(frozen=True)
class Timed:
    """One start -> first result: seconds in total and in ``start()`` (the rest is the execute),
    and the gateway's CPU seconds meanwhile (when measured)."""

    total: float
    start: float
    gateway_cpu: float | None = None


def start_and_execute(session: GatewayKernelSession, gateway: str | None = None) -> Timed:
    cpu_before = cpu_seconds([gateway]) if gateway else {}
    began = time.perf_counter()
    session.start()
    started = time.perf_counter()
    result = session.execute("1+1", timeout=60)
    done = time.perf_counter()
    cpu = used_between(cpu_before, cpu_seconds([gateway])) if gateway else None
    if str(result) != "2":
        raise RuntimeError(f"execute('1+1') returned {result!r}")
    return Timed(done - began, started - began, cpu)


def start_to_result(stack: Stack, kernel_name: str, gateway: str | None = None) -> Timed:
    """A new session's ``start()`` + ``execute("1+1")``; its shutdown is not timed."""
    session = GatewayKernelSession(
        stack.gateway_http, stack.gateway_ws, kernel_name, startup_timeout=120
    )
    try:
        return start_and_execute(session, gateway)
    finally:
        session.shutdown()


def docker_run_true() -> float:
    began = time.perf_counter()
    subprocess.run(["docker", "run", "--rm", KERNEL_IMAGE, "true"], check=True, capture_output=True)
    return time.perf_counter() - began


@dataclass(frozen=True)
class WarmCounters:
    """The gateway's count of warm python3 starts and the seconds its claims took in total."""

    starts: float
    seconds: float
    observed: float

    @classmethod
    def read(cls, stack: Stack) -> WarmCounters:
        labels = {"kernelspec": POOLED, "source": "warm"}
        return cls(
            stack.metric("sandbox_kernel_starts_total", **labels),
            stack.metric("sandbox_kernel_start_seconds_sum", **labels),
            stack.metric("sandbox_kernel_start_seconds_count", **labels),
        )

    def since(self, before: WarmCounters, samples: list[Timed]) -> str:
        """Warm share and where the time went, for a row's "Other" cell."""
        claim = (self.seconds - before.seconds) / max(1.0, self.observed - before.observed)
        starts = [t.start for t in samples]
        executes = [t.total - t.start for t in samples]
        cpu = [t.gateway_cpu for t in samples if t.gateway_cpu is not None]
        cpu_text = f"; gateway CPU per start: mean {ms(statistics.fmean(cpu))}" if cpu else ""
        return (
            f"{self.starts - before.starts:.0f}/{len(samples)} served warm; p50 of `start()` "
            f"{ms(p50(starts))} (the gateway's claim in it: mean {ms(claim)}), of the first "
            f"`execute` {ms(p50(executes))}{cpu_text}"
        )


def one_at_a_time_rows(stack: Stack, args: argparse.Namespace) -> list[Row]:
    """Rows 1, 3 and 4, interleaved; the first of each is a warm-up."""
    warm: list[Timed] = []
    cold: list[Timed] = []
    floor: list[float] = []
    last = max(args.runs, args.cold_runs, args.docker_runs)
    cold_before = stack.metric("sandbox_kernel_starts_total", kernelspec=UNPOOLED, source="cold")
    warm_before = WarmCounters.read(stack)
    gateway = stack.gateway_container()
    for i in range(last + 1):
        if i <= args.runs:
            stack.settle(DEFAULT_POOL)
            if i == 1:
                warm_before = WarmCounters.read(stack)
            timed = start_to_result(stack, POOLED, gateway)
            if i:
                warm.append(timed)
        if i <= args.cold_runs:
            stack.settle(DEFAULT_POOL)
            timed = start_to_result(stack, UNPOOLED)
            if i:
                cold.append(timed)
        if i <= args.docker_runs:
            elapsed = docker_run_true()
            if i:
                floor.append(elapsed)
        progress(f"one at a time: round {i} of {last}")
    stack.settle(DEFAULT_POOL)
    warm_note = WarmCounters.read(stack).since(warm_before, warm)
    cold_starts = stack.metric("sandbox_kernel_starts_total", kernelspec=UNPOOLED, source="cold")
    warm_s = [t.total for t in warm]
    cold_s = [t.total for t in cold]
    return [
        Row(
            "1",
            f"start → first result, warm (pool of {DEFAULT_POOL}, one at a time)",
            str(len(warm_s)),
            ms(p50(warm_s)),
            ms(p99(warm_s)),
            warm_note,
            verdict(p50(warm_s) * 1000 <= WARM_TARGET_MS, f"p50 ≤ {WARM_TARGET_MS:.0f} ms"),
        ),
        Row(
            "3",
            f"start → first result, cold (`{UNPOOLED}`, no pool, one at a time)",
            str(len(cold_s)),
            ms(p50(cold_s)),
            ms(p99(cold_s)),
            f"{cold_starts - cold_before - 1:.0f}/{len(cold_s)} cold (gateway metrics); "
            f"{p50(cold_s) / p50(warm_s):.0f}x the warm p50",
        ),
        Row(
            "4",
            "`docker run --rm` kernel image `true` (floor of any container start)",
            str(len(floor)),
            ms(p50(floor)),
            ms(p99(floor)),
        ),
    ]


def baseline_warm_rows(stack: Stack, args: argparse.Namespace, current: list[Row]) -> list[Row]:
    """Row 1 again with the gateway image ``--baseline-version`` (e.g. the release before a
    change), in the same run and on the same machine, beside the current image's row 1."""
    version = args.baseline_version
    progress(f"recreating the gateway from mini-jupyter-sandbox/gateway:{version} (baseline)")
    stack.env["SANDBOX_VERSION"] = version  # every image of the stack: tag them all
    try:
        stack.up(DEFAULT_POOL)
        gateway = stack.gateway_container()
        warm: list[float] = []
        for i in range(args.runs + 1):
            stack.settle(DEFAULT_POOL)
            timed = start_to_result(stack, POOLED, gateway)
            if i:
                warm.append(timed.total)
            progress(f"baseline: round {i} of {args.runs}")
    finally:
        stack.env["SANDBOX_VERSION"] = VERSION
    now = next(row for row in current if row.number == "1")
    value, unit = now.p50.split()
    now_ms = float(value) / (1000 if unit == "µs" else 1)
    return [
        Row(
            "1b",
            f"start → first result, warm, gateway `{version}` (baseline of row 1)",
            str(len(warm)),
            ms(p50(warm)),
            ms(p99(warm)),
            f"row 1's p50 ({now.p50}) is {now_ms / (p50(warm) * 1000):.2f}x this",
        )
    ]


def idle_rows(stack: Stack, pool_size: int, idle_seconds: float) -> list[Row]:
    """Rows 6 and 7: what a full, idle pool costs."""
    stack.settle(pool_size)
    time.sleep(5)  # the last refill's own start-up work is done
    pooled = stack.kernel_containers(pooled_only=True)
    gateway = stack.gateway_container()
    usage = memory_usage([*pooled, gateway])
    per_kernel = [usage[c[:12]] for c in pooled if c[:12] in usage]
    gateway_memory = usage.get(gateway[:12], 0.0)

    began = time.monotonic()
    before = cpu_seconds([gateway, *pooled])
    time.sleep(idle_seconds)
    after = cpu_seconds([gateway, *pooled])
    window = time.monotonic() - began
    gateway_cpu = used_between({gateway: before.get(gateway, 0)}, {gateway: after.get(gateway, 0)})
    kernels_cpu = used_between(
        {c: v for c, v in before.items() if c != gateway},
        {c: v for c, v in after.items() if c != gateway},
    )
    if gateway not in before or kernels_cpu is None:
        cpu_text = "n/a: no readable cgroup CPU counters here"
    else:
        kernels_percent = 100 * kernels_cpu / window
        cpu_text = (
            f"gateway {100 * (gateway_cpu or 0) / window:.2f}% + {len(pooled)} pooled kernels "
            f"{kernels_percent:.2f}% (each {kernels_percent / len(pooled):.3f}%) of one core"
        )
    return [
        Row(
            "6",
            f"memory per idle pooled kernel (pool of {pool_size} full, nothing claimed)",
            str(len(per_kernel)),
            other=f"`docker stats` MEM USAGE: mean {statistics.fmean(per_kernel) / MIB:.1f} MiB, "
            f"max {max(per_kernel) / MIB:.1f} MiB per kernel; gateway "
            f"{gateway_memory / MIB:.0f} MiB",
        ),
        Row(
            "7",
            f"CPU of the idle pool over {window:.0f} s (pool of {pool_size} full)",
            other=cpu_text,
        ),
    ]


@dataclass
class RoundCpu:
    """CPU seconds over parallel rounds, from the barrier's release until the last result."""

    wall: float = 0.0
    gateway: float = 0.0
    kernels: float = 0.0  # the pooled kernels that were claimed
    machine: float = 0.0  # every process on the machine (refills, this client, other jobs)


def parallel_round(stack: Stack, parallel: int, cpu: RoundCpu) -> list[Timed]:
    """``parallel`` starts + executes released together by a barrier."""
    barrier = threading.Barrier(parallel + 1)
    sessions = [
        GatewayKernelSession(stack.gateway_http, stack.gateway_ws, POOLED, startup_timeout=120)
        for _ in range(parallel)
    ]
    times: list[Timed] = []
    failures: list[BaseException] = []

    def one(session: GatewayKernelSession) -> None:
        barrier.wait()
        try:
            times.append(start_and_execute(session))
        except Exception as exc:
            failures.append(exc)

    threads = [threading.Thread(target=one, args=(s,), daemon=True) for s in sessions]
    for thread in threads:
        thread.start()
    gateway, pooled = stack.gateway_container(), stack.kernel_containers(pooled_only=True)
    gateway_before, pooled_before = cpu_seconds([gateway]), cpu_seconds(pooled)
    machine_before = machine_busy_seconds()
    barrier.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    cpu.wall += time.perf_counter() - began
    cpu.machine += machine_busy_seconds() - machine_before
    cpu.gateway += used_between(gateway_before, cpu_seconds([gateway])) or 0.0
    cpu.kernels += used_between(pooled_before, cpu_seconds(pooled)) or 0.0
    with ThreadPoolExecutor(8) as executor:  # shutdowns, untimed
        list(executor.map(lambda s: quietly(s.shutdown)(), sessions))
    if failures:
        raise RuntimeError(f"{len(failures)} of {parallel} parallel starts failed") from failures[0]
    return times


def parallel_row(stack: Stack, parallel: int, rounds: int) -> Row:
    """Row 2: ``parallel`` starts at once, ``rounds`` times, the pool refilled in between."""
    stack.settle(parallel)
    start_to_result(stack, POOLED)  # warm-up of the recreated gateway, not counted
    per_round: list[list[Timed]] = []
    cpu = RoundCpu()
    warm_before = WarmCounters.read(stack)
    for number in range(rounds):
        stack.settle(parallel)
        per_round.append(parallel_round(stack, parallel, cpu))
        round_p50 = p50([t.total for t in per_round[-1]])
        progress(f"parallel: round {number + 1} of {rounds}, p50 {ms(round_p50)}")
    stack.settle(parallel)
    samples = [t for batch in per_round for t in batch]
    totals = [t.total for t in samples]
    round_p50s = ", ".join(ms(p50([t.total for t in batch])) for batch in per_round)
    return Row(
        "2",
        f"start → first result, {parallel} in parallel (pool of {parallel}), {rounds} rounds",
        str(len(samples)),
        ms(p50(totals)),
        ms(p99(totals)),
        f"p50 per round: {round_p50s}; "
        + WarmCounters.read(stack).since(warm_before, samples)
        + f"; CPU per start: gateway {ms(cpu.gateway / len(samples))}, claimed kernel "
        f"{ms(cpu.kernels / len(samples))}; machine busy "
        f"{100 * cpu.machine / cpu.wall:.0f}% of {100 * (os.cpu_count() or 1)}% during the rounds",
        verdict(p50(totals) * 1000 <= PARALLEL_TARGET_MS, f"p50 ≤ {PARALLEL_TARGET_MS:.0f} ms"),
    )


# --- row 8: load ------------------------------------------------------------------------------


@dataclass
class Load:
    """What one side (gateway or raw ZMQ) did across its rounds."""

    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0
    executes: int = 0
    lost: int = 0  # raised or timed out
    mismatched: int = 0  # output not exactly this session's token and iteration
    crossed: int = 0  # ... and carrying another session's token
    errors: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # what -> CPU seconds over the rounds

    @property
    def rate(self) -> float:
        return self.executes / self.wall

    def cpu_percent(self, what: str) -> str:
        return f"{100 * self.cpu[what] / self.wall:.0f}%" if what in self.cpu else "n/a"

    def cpu_text(self, parts: dict[str, str]) -> str:
        """CPU of each part as % of one core and per execute, then the whole machine's."""
        cells = [
            f"{label} {self.cpu_percent(what)} ({ms(self.cpu[what] / self.executes)})"
            for what, label in parts.items()
            if what in self.cpu
        ]
        return (
            f"CPU, % of one core (per execute): {', '.join(cells)}; whole machine "
            f"{self.cpu_percent('machine')} of {100 * (os.cpu_count() or 1)}%"
        )


Execute = Callable[[str], str]
"""Runs code in one session's kernel and returns its stdout."""


def load_round(
    executes: list[Execute],
    tokens: list[str],
    first: int,
    count: int,
    load: Load,
    meters: dict[str, Callable[[], float | None]],
) -> None:
    """Every session runs ``count`` executes at once, one thread each, released together."""
    barrier = threading.Barrier(len(executes) + 1)
    per_thread: list[list[float]] = [[] for _ in executes]
    faults: list[list[str]] = [[] for _ in executes]  # "lost: …" / "mismatch: …" / "crossed: …"

    def worker(k: int) -> None:
        barrier.wait()
        for i in range(first, first + count):
            began = time.perf_counter()
            try:
                out = executes[k](f"print({tokens[k]!r}, {i})")
            except Exception as exc:
                faults[k].append(f"lost: session {k} iteration {i}: {type(exc).__name__}: {exc}")
                continue
            per_thread[k].append(time.perf_counter() - began)
            if out != f"{tokens[k]} {i}\n":
                other = any(t in out for j, t in enumerate(tokens) if j != k)
                kind = "crossed" if other else "mismatch"
                faults[k].append(f"{kind}: session {k} iteration {i}: {out[:80]!r}")

    threads = [
        threading.Thread(target=worker, args=(k,), daemon=True) for k in range(len(executes))
    ]
    for thread in threads:
        thread.start()
    before = {what: meter() for what, meter in meters.items()}
    barrier.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    load.wall += time.perf_counter() - began
    after = {what: meter() for what, meter in meters.items()}
    for what in meters:
        start, end = before[what], after[what]
        if start is not None and end is not None:
            load.cpu[what] = load.cpu.get(what, 0.0) + end - start
    load.executes += len(executes) * count
    for samples in per_thread:
        load.latencies += samples
    for messages in faults:
        load.lost += sum(m.startswith("lost") for m in messages)
        load.mismatched += sum(not m.startswith("lost") for m in messages)
        load.crossed += sum(m.startswith("crossed") for m in messages)
        load.errors += messages


def container_meter(containers: Callable[[], list[str]]) -> Callable[[], float | None]:
    def meter() -> float | None:
        used = cpu_seconds(containers())
        return sum(used.values()) if used else None

    return meter


def pids_meter(pids: list[int]) -> Callable[[], float | None]:
    def meter() -> float | None:
        used = [process_cpu_seconds(pid) for pid in pids]
        return sum(u for u in used if u is not None) if any(u is not None for u in used) else None

    return meter


@contextlib.contextmanager
def environment(**variables: str) -> Iterator[None]:
    """``os.environ`` with ``variables`` set, restored afterwards (processes started meanwhile
    inherit them)."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def kernel_pid(manager: Any) -> int | None:
    process = getattr(getattr(manager, "provisioner", None), "process", None)
    return getattr(process, "pid", None)


def load_rows(
    stack: Stack, args: argparse.Namespace, pool_size: int, notes: list[str]
) -> list[Row]:
    sessions_n, executes_n, rounds = args.load_sessions, args.load_executes, args.load_rounds
    per_round = [executes_n // rounds + (r < executes_n % rounds) for r in range(rounds)]
    tokens = [f"tok-{uuid.uuid4().hex[:12]}" for _ in range(2 * sessions_n)]
    gateway_tokens, raw_tokens = tokens[:sessions_n], tokens[sessions_n:]
    gateway_load, raw_load = Load(), Load()
    with contextlib.ExitStack() as stack_of:
        progress(f"load: starting {sessions_n} gateway sessions (untimed)")
        sessions = [
            GatewayKernelSession(stack.gateway_http, stack.gateway_ws, POOLED, startup_timeout=300)
            for _ in range(sessions_n)
        ]
        for session in sessions:
            stack_of.callback(quietly(session.shutdown))
        with ThreadPoolExecutor(4) as executor:
            list(executor.map(lambda s: s.start(), sessions))
        stack.settle(pool_size, held=sessions_n)  # the refill is over before anything is timed
        progress(f"load: starting {sessions_n} local kernels with {args.raw_python} (untimed)")
        clients = []
        pids = []
        for _ in range(sessions_n):
            # An IPython directory per kernel, as each container has a home of its own: kernels
            # sharing one history.sqlite lock each other out and print that into their output.
            profile = stack_of.enter_context(tempfile.TemporaryDirectory(prefix="bench-ipython-"))
            with environment(IPYTHONDIR=profile):
                manager = stack_of.enter_context(bench_client.local_kernel(Path(args.raw_python)))
            clients.append(stack_of.enter_context(bench_client.blocking_client(manager)))
            pid = kernel_pid(manager)
            if pid is not None:
                pids.append(pid)

        def gateway_execute(session: GatewayKernelSession) -> Execute:
            return lambda code: session.execute(code, timeout=120).stdout

        def raw_execute(client: Any) -> Execute:
            return lambda code: bench_client.raw_execute(client, code, timeout=120)

        gateway = stack.gateway_container()
        gateway_meters = {
            "gateway": container_meter(lambda: [gateway]),
            "kernels": container_meter(stack.kernel_containers),
            "proxy": pids_meter(proxy_pids(stack.gateway_port)),
            "client": time.process_time,
            "machine": machine_busy_seconds,
        }
        raw_meters = {
            "kernels": pids_meter(pids),
            "client": time.process_time,
            "machine": machine_busy_seconds,
        }
        first = 0
        for number, count in enumerate(per_round):
            load_round(
                [gateway_execute(s) for s in sessions],
                gateway_tokens,
                first,
                count,
                gateway_load,
                gateway_meters,
            )
            progress(f"load: round {number + 1}/{rounds}, gateway {gateway_load.rate:.0f} exec/s")
            load_round(
                [raw_execute(c) for c in clients], raw_tokens, first, count, raw_load, raw_meters
            )
            progress(f"load: round {number + 1}/{rounds}, raw ZMQ {raw_load.rate:.0f} exec/s")
            first += count
        progress("load: stopping the load's kernels")
    for side, load in (("gateway", gateway_load), ("raw ZMQ", raw_load)):
        if load.errors:
            notes.append(f"{side}: {len(load.errors)} faulty executes, first: {load.errors[0]}")
    ratio = gateway_load.rate / raw_load.rate
    if ratio < LOAD_TARGET:
        notes.append(
            f"load below {LOAD_TARGET}x raw: the gateway (one Python process) used "
            f"{gateway_load.cpu_percent('gateway')} of one core, so it was "
            + ("" if gateway_load.cpu["gateway"] / gateway_load.wall > 0.9 else "not ")
            + "saturated itself; the whole machine was busy "
            f"{gateway_load.cpu_percent('machine')} of {100 * (os.cpu_count() or 1)}% "
            "(see the CPU per execute of each part in row 8a against row 8b)"
        )
    pattern = f"{sessions_n} sessions x {executes_n} executes"
    return [
        Row(
            "8a",
            f"load through the gateway: {pattern}, all at once",
            str(gateway_load.executes),
            ms(p50(gateway_load.latencies)),
            ms(p99(gateway_load.latencies)),
            f"**{gateway_load.rate:.0f} executes/s**; lost {gateway_load.lost}, mismatched "
            f"{gateway_load.mismatched} (other session's output: {gateway_load.crossed}); "
            + gateway_load.cpu_text(
                {
                    "gateway": "gateway",
                    "kernels": "kernel containers",
                    "proxy": "docker-proxy",
                    "client": "this client",
                }
            ),
            verdict(gateway_load.lost + gateway_load.mismatched == 0, "0 lost or mismatched"),
        ),
        Row(
            "8b",
            f"load, raw ZMQ floor: {pattern} on local ipykernels (jupyter_client)",
            str(raw_load.executes),
            ms(p50(raw_load.latencies)),
            ms(p99(raw_load.latencies)),
            f"**{raw_load.rate:.0f} executes/s**; lost {raw_load.lost}, mismatched "
            f"{raw_load.mismatched}; "
            + raw_load.cpu_text({"kernels": "kernels", "client": "this client"}),
        ),
        Row(
            "8c",
            "load: gateway executes/s ÷ raw ZMQ executes/s",
            other=f"{ratio:.2f}x raw",
            target=verdict(ratio >= LOAD_TARGET, f"≥ {LOAD_TARGET}x raw"),
        ),
    ]


# --- main -------------------------------------------------------------------------------------


def image_version(python: list[str], module: str) -> str:
    probe = f"import {module}; print({module}.__version__)"
    done = subprocess.run([*python, "-c", probe], capture_output=True, text=True, check=False)
    return done.stdout.strip() or "?"


def check_images() -> None:
    for name in ("gateway", "kernel-python"):
        image = f"mini-jupyter-sandbox/{name}:{VERSION}"
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode:
            raise SystemExit(f"image {image} is missing: run images/build.sh")


def terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # the same clean-up as Ctrl-C


@contextlib.contextmanager
def running(stack: Stack) -> Iterator[Stack]:
    # Leftovers of an interrupted earlier run hold the project's names.
    stack.down(stack.shared_volume)
    try:
        yield stack
    except BaseException:
        print(f"--- gateway log ---\n{stack.logs()}", file=sys.stderr)
        raise
    finally:
        progress(f"tearing down compose project {stack.project}")
        stack.down(stack.shared_volume)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="warm starts one at a time (row 1)")
    parser.add_argument("--cold-runs", type=int, default=10, help="cold starts (row 3)")
    parser.add_argument("--docker-runs", type=int, default=10, help="docker run true (row 4)")
    parser.add_argument("--parallel", type=int, default=20, help="pool size and parallel starts")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of parallel starts")
    parser.add_argument("--idle-seconds", type=float, default=30, help="idle CPU window (row 7)")
    parser.add_argument("--load-sessions", type=int, default=50)
    parser.add_argument("--load-executes", type=int, default=100, help="executes per session")
    parser.add_argument("--load-rounds", type=int, default=2, help="gateway/raw alternations")
    parser.add_argument("--skip-load", action="store_true", help="leave out row 8")
    parser.add_argument(
        "--baseline-version",
        default="",
        help="also time row 1 with the images of this tag (row 1b: before/after in one run)",
    )
    parser.add_argument("--raw-python", default=sys.executable, help="Python of the raw kernels")
    parser.add_argument("--project", default="mjsbench", help="compose project name")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, terminate)
    check_images()

    load_sessions = 0 if args.skip_load else args.load_sessions
    max_kernels = max(MAX_KERNELS, args.parallel + load_sessions + 2)
    stack = Stack.create(args.project, max_kernels)
    kernel_ipykernel = image_version(
        ["docker", "run", "--rm", "--network", "none", KERNEL_IMAGE, "python"], "ipykernel"
    )
    local_ipykernel = image_version([args.raw_python], "ipykernel")
    header = [
        "## bench_pool.py: the warm pool",
        "",
        f"- {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {platform.node()}: {os.cpu_count()} CPUs, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1024**3:.1f} GiB, "
        f"Docker {docker('version', '-f', '{{.Server.Version}}').strip()}",
        f"- load average (1/5/15 min) at start: {load_average()}",
        f"- compose project `{args.project}` (gateway only), SANDBOX_MAX_KERNELS={max_kernels}, "
        f"SANDBOX_KERNEL_MEMORY={KERNEL_MEMORY}, SANDBOX_KERNEL_CPUS=1, "
        f"SANDBOX_POOL_CHECK_INTERVAL={CHECK_INTERVAL}; pool python3={DEFAULT_POOL} for rows "
        f"1/3/4, python3={args.parallel} for rows 2/6/7/8",
        f"- runs: {args.runs} warm, {args.cold_runs} cold, {args.docker_runs} docker run "
        f"(interleaved, one warm-up each); {args.rounds} x {args.parallel} parallel; "
        f"{args.idle_seconds:g} s idle; load "
        + (
            "skipped"
            if args.skip_load
            else f"{args.load_sessions} x {args.load_executes} in {args.load_rounds} "
            f"gateway/raw alternations"
        ),
        f"- ipykernel {kernel_ipykernel} in the kernel image; {local_ipykernel} for the raw "
        f"floor ({args.raw_python})",
    ]
    rows: list[Row] = []
    notes: list[str] = []
    with running(stack):
        progress(
            f"compose project {args.project}: gateway on {stack.gateway_http}, "
            f"pool of {DEFAULT_POOL}"
        )
        stack.up(DEFAULT_POOL)
        rows += one_at_a_time_rows(stack, args)
        if args.baseline_version:
            rows += baseline_warm_rows(stack, args, rows)
        progress(f"recreating the gateway with a pool of {args.parallel}")
        stack.up(args.parallel)
        idle = idle_rows(stack, args.parallel, args.idle_seconds)
        rows.append(parallel_row(stack, args.parallel, args.rounds))
        if not args.skip_load:
            load = load_rows(stack, args, args.parallel, notes)
    header.append(f"- load average at end: {load_average()}")
    rows.extend(
        Row(
            "5",
            f"{name} — quoted",
            p50=figure,
            other=f"published: “{text}”",
            target="quoted, not measured here",
        )
        for name, figure, text in PEERS
    )
    rows += idle
    if not args.skip_load:
        rows += load
    rows.sort(key=lambda r: r.number)
    print(*header, "", render(rows), sep="\n")
    if notes:
        print("\nNotes:", *(f"- {note}" for note in notes), sep="\n")


if __name__ == "__main__":
    main()
