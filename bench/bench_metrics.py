"""Overhead of the Prometheus session over the plain session, per execute, side by side.

    python bench/bench_metrics.py [--iterations 500]

Both sessions run against the same test gateway (a real Enterprise Gateway 3.3 with local
kernels), interleaved round by round so that machine noise hits both alike.  Target: the
Prometheus session's p50 is less than 5 % above the plain session's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jupyter_kernel_client import (
    ExecutionResult,
    GatewayKernelSession,
    KernelMetrics,
    PrometheusGatewayKernelSession,
)
from testkit.gateway import Gateway


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def instrumentation_cost(rounds: int = 20000) -> float:
    """Seconds the metrics add to one execute: what the session calls per execution.

    Round trips on a shared 2-core machine jitter by more than the instrumentation costs, so
    this isolates it: the calls one execute makes, without the network.
    """
    metrics = KernelMetrics.for_registry(CollectorRegistry())
    result = ExecutionResult(status="ok", outputs=[], execution_count=1, duration=0.005)
    started = time.perf_counter()
    for _ in range(rounds):
        metrics.executed("python3", result)
    return (time.perf_counter() - started) / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=500)
    args = parser.parse_args()

    gateway = Gateway().start()
    try:
        plain = GatewayKernelSession(gateway.http, gateway.ws, "python3").start()
        measured = PrometheusGatewayKernelSession(
            gateway.http, gateway.ws, "python3", registry=CollectorRegistry()
        ).start()
        timings: dict[str, list[float]] = {"plain": [], "prometheus": []}
        sessions = {"plain": plain, "prometheus": measured}
        for _ in range(20):  # warm-up
            plain.execute("1+1")
            measured.execute("1+1")
        for _ in range(args.iterations):
            for name, session in sessions.items():
                started = time.perf_counter()
                session.execute("1+1")
                timings[name].append(time.perf_counter() - started)
        plain.shutdown()
        measured.shutdown()
    finally:
        gateway.stop()

    instrumentation = instrumentation_cost()
    base = statistics.median(timings["plain"])
    print(f"execute('1+1') round trip, {args.iterations} iterations each, interleaved\n")
    print("| session | p50 ms | p99 ms | p50 vs plain |")
    print("|---|---:|---:|---:|")
    for name, samples in timings.items():
        p50 = statistics.median(samples)
        overhead = (p50 / base - 1) * 100
        print(
            f"| {name} | {p50 * 1e3:.2f} | {percentile(samples, 0.99) * 1e3:.2f} "
            f"| {overhead:+.1f} % |"
        )
    print(
        f"| instrumentation alone (in process) | {instrumentation * 1e3:.4f} | | "
        f"{instrumentation / base * 100:+.2f} % |"
    )
    overhead = statistics.median(timings["prometheus"]) / base - 1
    verdict = "met" if overhead < 0.05 else "NOT met"
    print(f"\ntarget: Prometheus overhead < 5 % at p50 — {verdict} ({overhead * 100:+.1f} %)")


if __name__ == "__main__":
    main()
