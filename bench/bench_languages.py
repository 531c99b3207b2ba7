"""Every language's kernel beside Python's, in one run: start to first result, cold and warm,
the round trip of the simplest expression, and the memory of an idle kernel.

One run, one markdown table, a column per kernelspec (python3, bash, javascript, r).  The bench
brings up a compose project of its own (``bench_pool.Stack``: the gateway only,
``SANDBOX_KERNEL_MEMORY=256m``) twice:

1. with no pool: cold start -> first result (``start()`` + the language's simplest expression),
   ``--runs`` times per language, the languages interleaved so that load from elsewhere falls on
   all alike; on each cold session, ``--executes`` round trips of that expression; and each
   idle kernel's memory (``docker stats``, 3 s after its first result);
2. with a pool of one kernel per language: warm start -> first result, ``--runs`` times per
   language, the pool refilled (untimed) before each start.

    python bench/bench_languages.py                       # about 4 minutes on 2 cores
    python bench/bench_languages.py --runs 3 --executes 50   # quick
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field

import bench_client  # bench/ is on sys.path when run as a script (it puts the repo root there)
import bench_pool
import requests
from bench_pool import KERNEL_MEMORY, MIB, Stack, memory_usage, p50, p99, progress

from jupyter_kernel_client import GatewayKernelSession
from testkit.compose import docker

# The simplest expression of each language, and what the session prints for it.
SIMPLEST = {
    "python3": ("1+1", "2"),
    "bash": ("echo $((1+1))", "2"),
    "javascript": ("1+1", "2"),
    "r": ("1+1", "[1] 2"),
}
SETTLE_TIMEOUT = 300.0


@dataclass
class Samples:
    cold: list[float] = field(default_factory=list)
    warm: list[float] = field(default_factory=list)
    executes: list[float] = field(default_factory=list)
    memory: list[float] = field(default_factory=list)


def up(stack: Stack, pool: dict[str, int]) -> None:
    """(Re)create the gateway with ``pool``; wait until every pool is full."""
    stack.env["SANDBOX_POOL"] = ",".join(f"{name}={size}" for name, size in pool.items())
    done = stack.run_compose("up", "-d", "--no-build", "gateway")
    if done.returncode != 0:
        raise RuntimeError(f"compose up failed:\n{done.stdout}\n{done.stderr}")
    settle(stack, pool)


def settle(stack: Stack, pool: dict[str, int]) -> None:
    """Until every pool is full, nothing starts, and only pooled kernel containers run."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            ready = all(
                stack.metric("sandbox_pool_kernels", kernelspec=name, state="ready") == size
                and stack.metric("sandbox_pool_kernels", kernelspec=name, state="starting") == 0
                for name, size in pool.items()
            )
            if ready and len(stack.kernel_containers()) == sum(pool.values()):
                return
        time.sleep(0.25)
    raise RuntimeError(f"the stack did not settle with pool {pool}\n{stack.logs()}")


def session(stack: Stack, kernelspec: str) -> GatewayKernelSession:
    return GatewayKernelSession(
        stack.gateway_http, stack.gateway_ws, kernelspec, startup_timeout=180
    )


def first_result(kernel: GatewayKernelSession) -> float:
    """``start()`` + the simplest expression, seconds."""
    code, expected = SIMPLEST[kernel.kernel_name]
    began = time.perf_counter()
    kernel.start()
    result = kernel.execute(code, timeout=120)
    elapsed = time.perf_counter() - began
    bench_client.expect(str(result).strip() == expected, f"{kernel.kernel_name}: {result!r}")
    return elapsed


def cold_round(stack: Stack, samples: dict[str, Samples], executes: int) -> None:
    for kernelspec in SIMPLEST:
        kernel = session(stack, kernelspec)
        try:
            samples[kernelspec].cold.append(first_result(kernel))
            code, expected = SIMPLEST[kernelspec]
            for _ in range(executes):
                began = time.perf_counter()
                result = kernel.execute(code, timeout=60)
                samples[kernelspec].executes.append(time.perf_counter() - began)
                bench_client.expect(str(result).strip() == expected, f"{kernelspec}: {result!r}")
            time.sleep(3)
            (container,) = stack.kernel_container_ids(f"kernel_id={kernel.kernel_id}")
            samples[kernelspec].memory.extend(memory_usage([container]).values())
        finally:
            kernel.shutdown()


def warm_round(stack: Stack, samples: dict[str, Samples], pool: dict[str, int]) -> None:
    for kernelspec in SIMPLEST:
        settle(stack, pool)
        kernel = session(stack, kernelspec)
        try:
            samples[kernelspec].warm.append(first_result(kernel))
        finally:
            kernel.shutdown()


def render(samples: dict[str, Samples]) -> str:
    names = list(SIMPLEST)

    def row(label: str, cells: list[str]) -> str:
        return f"| {label} | " + " | ".join(cells) + " |"

    def timing(values: list[float]) -> str:
        if not values:
            return "-"
        return f"{bench_pool.ms(p50(values))} (p99 {bench_pool.ms(p99(values))})"

    lines = [
        row("", names),
        row("---", ["---:"] * len(names)),
        row("cold start → first result, p50", [timing(samples[n].cold) for n in names]),
        row("warm start → first result, p50", [timing(samples[n].warm) for n in names]),
        row("simplest expression round trip, p50", [timing(samples[n].executes) for n in names]),
        row(
            "idle kernel memory (docker stats), mean",
            [f"{statistics.mean(samples[n].memory) / MIB:.0f} MiB" for n in names],
        ),
        row("simplest expression", [f"`{SIMPLEST[n][0]}`" for n in names]),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="cold and warm starts per language")
    parser.add_argument("--executes", type=int, default=100, help="round trips per cold session")
    parser.add_argument("--project", default="mjslang", help="compose project name")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, bench_pool.terminate)
    bench_pool.check_images()
    for kernelspec in SIMPLEST:
        if kernelspec != "python3":
            docker(
                "image", "inspect", f"mini-jupyter-sandbox/kernel-{kernelspec}:{bench_pool.VERSION}"
            )
    stack = Stack.create(args.project, 20)
    samples: dict[str, Samples] = defaultdict(Samples)
    header = [
        "## bench_languages.py: every language beside Python",
        "",
        f"- {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {platform.node()}: {os.cpu_count()} CPUs, "
        f"Docker {docker('version', '-f', '{{.Server.Version}}').strip()}",
        f"- compose project `{args.project}` (gateway only), SANDBOX_KERNEL_MEMORY={KERNEL_MEMORY};"
        f" {args.runs} cold and warm starts per language, {args.executes} round trips per cold"
        " session; cold with no pool, warm with a pool of one per language",
        f"- load average at start: {bench_pool.load_average()}",
    ]
    pool = dict.fromkeys(SIMPLEST, 1)
    with bench_pool.running(stack):
        up(stack, {})
        for run in range(args.runs):
            progress(f"cold round {run + 1}/{args.runs}")
            cold_round(stack, samples, args.executes)
        up(stack, pool)
        for run in range(args.runs):
            progress(f"warm round {run + 1}/{args.runs}")
            warm_round(stack, samples, pool)
    header.append(f"- load average at end: {bench_pool.load_average()}")
    print("\n".join([*header, "", render(samples)]))


if __name__ == "__main__":
    main()
