"""Scale: what a user sees as live kernels accumulate on one host, at checkpoints side by side.

One run, one markdown table.  The bench brings up a compose project of its own (the gateway
only, ``bench_pool.Stack``: pool python3=2, ``SANDBOX_KERNEL_MEMORY=256m``, the cap above the
last checkpoint) and starts sessions of tenant "bench" that it keeps alive, idle, until the end.
At each checkpoint (``--checkpoints``, default 10, 150 and 300 live kernels; the pool's two are not
counted) it measures, with every earlier kernel still live:

* warm start -> first result: a python3 session (served by the pool), ``start()`` +
  ``execute("1+1")``, ``--runs`` times, the pool refilled between runs; shut down untimed;
* cold start -> first result: the same for "sandbox-python", which the pool does not serve;
* execute round trip: ``--executes`` of ``1+1`` on one of the live sessions;
* the gateway's CPU over ``--idle-seconds`` with every kernel idle (its cgroup counter);
* host memory per live kernel: the fall of ``MemAvailable`` since no session was live, divided
  by the number of live kernels (what the host really gives them, page cache and the engine's
  share included), beside ``docker stats``'s mean for the kernel containers.

The last column compares the last checkpoint with the first against the targets.  The bench
stops starting kernels at the first refusal and says why (a cap, or the host's memory reserve).

    python bench/bench_scale.py                                 # 10, 150, 300: about 10 minutes
    python bench/bench_scale.py --checkpoints 5,20 --runs 3     # quick
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import bench_client  # bench/ is on sys.path when run as a script (it puts the repo root there)
import bench_pool
from bench_pool import (
    KERNEL_MEMORY,
    MIB,
    POOLED,
    UNPOOLED,
    Stack,
    cpu_seconds,
    load_average,
    memory_usage,
    ms,
    p50,
    p99,
    progress,
    start_to_result,
    used_between,
)

from jupyter_kernel_client import GatewayKernelSession, KernelLimitError
from testkit.compose import docker

PARALLEL_STARTS = 4  # sessions started at once while filling up (a kernel start costs CPU)
TARGETS = {
    "warm": ("<= 1.2x", 1.2),
    "cold": ("<= 1.5x", 1.5),
    "execute p99": ("<= 1.5x", 1.5),
}
CPU_TARGET = 5.0  # % of one core, every kernel idle
MEMORY_TARGET = 60.0  # MiB per idle kernel


def mem_available() -> int:
    text = Path("/proc/meminfo").read_text()
    return next(int(line.split()[1]) * 1024 for line in text.splitlines() if "MemAvailable" in line)


@dataclass
class Checkpoint:
    live: int
    warm: list[float] = field(default_factory=list)
    cold: list[float] = field(default_factory=list)
    executes: list[float] = field(default_factory=list)
    gateway_cpu: float = 0.0  # % of one core
    host_memory: float = 0.0  # bytes per live kernel
    stats_memory: float = 0.0  # bytes, docker stats mean per kernel container


def start_session(stack: Stack) -> GatewayKernelSession:
    session = GatewayKernelSession(
        stack.gateway_http,
        stack.gateway_ws,
        POOLED,
        {"KERNEL_LAUNCH_TIMEOUT": "120"},
        startup_timeout=150,
    )
    session.start()
    return session


def fill(stack: Stack, live: list[GatewayKernelSession], target: int) -> str | None:
    """Start sessions until ``target`` are live; the reason of a refusal, if one stops it."""
    with ThreadPoolExecutor(PARALLEL_STARTS) as workers:
        while len(live) < target:
            batch = min(PARALLEL_STARTS, target - len(live))
            futures = [workers.submit(start_session, stack) for _ in range(batch)]
            refusal = None
            for future in futures:
                try:
                    live.append(future.result())
                except KernelLimitError as exc:
                    refusal = f"{exc.scope}: {exc}"
            if refusal:
                return refusal
            if len(live) % 50 < batch:
                progress(f"{len(live)} live kernels")
    return None


def measure(
    stack: Stack, live: list[GatewayKernelSession], args: argparse.Namespace, baseline: int
) -> Checkpoint:
    point = Checkpoint(len(live))
    stack.settle(bench_pool.DEFAULT_POOL, held=len(live))
    host_memory = (baseline - mem_available()) / len(live)
    held = [c for c in stack.kernel_containers() if c not in stack.kernel_containers(True)]
    usage = memory_usage(held)
    point.host_memory = host_memory
    point.stats_memory = statistics.fmean(usage.values()) if usage else 0.0
    gateway = stack.gateway_container()
    time.sleep(5)
    before, began = cpu_seconds([gateway]), time.monotonic()
    time.sleep(args.idle_seconds)
    used = used_between(before, cpu_seconds([gateway]))
    point.gateway_cpu = 100 * (used or 0.0) / (time.monotonic() - began)
    for run in range(args.runs + 1):  # the first of each is a warm-up
        stack.settle(bench_pool.DEFAULT_POOL, held=len(live))
        warm = start_to_result(stack, POOLED).total
        cold = start_to_result(stack, UNPOOLED).total
        if run:
            point.warm.append(warm)
            point.cold.append(cold)
    session = live[len(live) // 2]
    for _ in range(args.executes + 5):
        began = time.perf_counter()
        result = session.execute("1+1", timeout=60)
        point.executes.append(time.perf_counter() - began)
        if str(result) != "2":
            raise RuntimeError(f"execute returned {result!r}")
    point.executes = point.executes[5:]
    return point


def ratio(first: float, last: float, target: tuple[str, float] | None) -> str:
    if not first:
        return ""
    value = last / first
    if target is None:
        return f"{value:.2f}x"
    met = "met" if value <= target[1] else "NOT met"
    return f"{value:.2f}x ({target[0]}: {met})"


def render(points: list[Checkpoint]) -> str:
    first, last = points[0], points[-1]
    header = ["Measurement", *(f"{p.live} live" for p in points), f"{last.live} vs {first.live}"]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * len(points) + "|---|"]

    def row(name: str, cells: list[str], comparison: str) -> None:
        lines.append("| " + " | ".join([name, *cells, comparison]) + " |")

    row(
        "warm start -> first result p50",
        [ms(p50(p.warm)) for p in points],
        ratio(p50(first.warm), p50(last.warm), TARGETS["warm"]),
    )
    row(
        "cold start -> first result p50",
        [ms(p50(p.cold)) for p in points],
        ratio(p50(first.cold), p50(last.cold), TARGETS["cold"]),
    )
    row(
        "execute round trip p50 / p99",
        [f"{ms(p50(p.executes))} / {ms(p99(p.executes))}" for p in points],
        ratio(p99(first.executes), p99(last.executes), TARGETS["execute p99"]),
    )
    cpu_met = "met" if last.gateway_cpu <= CPU_TARGET else "NOT met"
    row(
        "gateway CPU, every kernel idle (% of a core)",
        [f"{p.gateway_cpu:.1f} %" for p in points],
        f"<= {CPU_TARGET:g} % at {last.live}: {cpu_met}",
    )
    memory_met = "met" if last.host_memory / MIB <= MEMORY_TARGET else "NOT met"
    row(
        "host memory per live kernel (MemAvailable fall; docker stats mean)",
        [f"{p.host_memory / MIB:.0f} MiB; {p.stats_memory / MIB:.0f} MiB" for p in points],
        f"<= {MEMORY_TARGET:g} MiB at {last.live}: {memory_met}",
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", default="10,150,300", help="live kernels, comma-separated")
    parser.add_argument("--runs", type=int, default=8, help="warm and cold starts per checkpoint")
    parser.add_argument("--executes", type=int, default=200, help="round trips per checkpoint")
    parser.add_argument("--idle-seconds", type=float, default=20, help="idle CPU window")
    parser.add_argument("--project", default="mjsscale", help="compose project name")
    args = parser.parse_args()
    checkpoints = sorted({int(n) for n in args.checkpoints.split(",")})
    signal.signal(signal.SIGTERM, bench_pool.terminate)
    bench_pool.check_images()
    stack = Stack.create(args.project, checkpoints[-1] + bench_pool.DEFAULT_POOL + 4)
    header = [
        "## bench_scale.py: live kernels on one host",
        "",
        f"- {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {platform.node()}: {os.cpu_count()} CPUs, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1024**3:.1f} GiB, "
        f"Docker {docker('version', '-f', '{{.Server.Version}}').strip()}",
        f"- compose project `{args.project}` (gateway only), pool python3=2, "
        f"SANDBOX_KERNEL_MEMORY={KERNEL_MEMORY}; {args.runs} warm and cold starts and "
        f"{args.executes} round trips per checkpoint, {args.idle_seconds:g} s idle window",
        f"- load average at start: {load_average()}",
    ]
    live: list[GatewayKernelSession] = []
    points: list[Checkpoint] = []
    stopped = None
    with bench_pool.running(stack):
        stack.up(bench_pool.DEFAULT_POOL)
        time.sleep(5)
        baseline = mem_available()
        try:
            for target in checkpoints:
                progress(f"starting kernels up to {target} live")
                stopped = fill(stack, live, target)
                if stopped:
                    progress(f"stopped at {len(live)} live kernels: {stopped}")
                progress(f"measuring at {len(live)} live kernels")
                points.append(measure(stack, live, args, baseline))
                if stopped:
                    break
        finally:
            progress(f"shutting {len(live)} sessions down")
            with ThreadPoolExecutor(8) as workers:
                list(workers.map(lambda s: s.shutdown(), live))
    header.append(f"- load average at end: {load_average()}")
    if stopped:
        header.append(f"- stopped starting kernels at {points[-1].live} live: {stopped}")
    print("\n".join([*header, "", render(points)]))
    bench_client.expect(len(points) == len(checkpoints), "every checkpoint was reached")


if __name__ == "__main__":
    main()
