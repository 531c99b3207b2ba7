"""Controller overhead: N SandboxSessions created at once vs N kernels started directly,
on a gateway without a pool and on one with a warm pool.

One run, one table.  Everything real except the Kubernetes API server, for which kmock's
``KubernetesEmulator`` stands in over HTTP (``testkit/kube.py``): a real Enterprise Gateway
(own venv, local kernels), the controller as its own process (``python -m controller``).

Two gateways, one after the other, each with its own API server and controller:

- **no pool**: the gateway as before, every start cold.
- **warm pool** (``SANDBOX_POOL=python3=<--pool-size>``, default one pooled kernel per session):
  each phase starts with the pool full, so every start of the phase is served warm
  (``sandbox_gateway.pool``).  The controller is the same code, unchanged: it sends
  the same start request with ``env.KERNEL_ID`` and the gateway answers it from the pool.

On each gateway, two phases:

1. **direct**: N kernel starts at once through the client's protocol core (the REST start the
   controller performs too: ``start_flow`` run by ``run_flow_async``); latency per kernel = until
   the gateway answered with its id.  The kernels are then shut down.
2. **controller**: N SandboxSessions created at once on the API server; latency per session =
   from the API server storing the object to it storing ``status.phase = Ready``.

Per-session overhead = p50(controller) - p50(direct), per gateway.  Design target: <= 100 ms.
Each phase's warm and cold starts are read from the gateway's ``/metrics``
(``sandbox_kernel_starts_total``), with the reason of any cold start.

    python bench/bench_controller.py                  # 50 sessions, pool of 50
    python bench/bench_controller.py --sessions 10    # lighter
    python bench/bench_controller.py --no-pool-phase  # the gateway without a pool only
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import aiohttp
import requests
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for testkit and controller

from jupyter_kernel_client import GatewayConfig  # noqa: E402
from jupyter_kernel_client import protocol as proto  # noqa: E402
from testkit.gateway import Gateway, free_port  # noqa: E402
from testkit.kube import Cluster, Controller  # noqa: E402

TARGET_MS = 100.0
NAMESPACE = "bench"
KERNEL_NAME = "python3"
TESTKIT_MAX_KERNELS = 64  # the cap testkit gives its gateways (SANDBOX_MAX_KERNELS)

Starts = collections.Counter[tuple[str, str]]
"""Kernel starts of one phase by (source, reason): ("warm", ""), ("cold", "not_pooled"), …"""


@dataclass(frozen=True)
class Setup:
    """One gateway configuration the phases run against."""

    label: str
    pool_size: int
    """Pooled python3 kernels (0: no pool)."""
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Phase:
    latencies: list[float]
    """Per kernel or session, ms."""
    wall: float
    """First request to last answer (or Ready), ms."""
    starts: Starts
    gateway_start_ms: dict[str, float]
    """Mean time the gateway spent in a start, by source (warm, cold), from its histogram."""


@dataclass(frozen=True)
class Outcome:
    setup: Setup
    direct: Phase
    controller: Phase
    share: list[float]


async def direct_starts(gateway: Gateway, count: int) -> tuple[list[float], float, list[str]]:
    """Start ``count`` kernels at once; (latency per kernel in ms, wall time in ms, ids)."""
    config = GatewayConfig(gateway.http, kernel_name=KERNEL_NAME, startup_timeout=120)
    async with aiohttp.ClientSession() as http:
        perform = proto.rest_performer_async(http)

        async def start_one() -> tuple[float, str]:
            env = {"KERNEL_ID": str(uuid.uuid4())}
            flow = proto.start_flow(config.replace(launch_env=env, max_retries=0))
            began = time.monotonic()
            kernel_id = await proto.run_flow_async(flow, perform)
            return (time.monotonic() - began) * 1000, str(kernel_id)

        began = time.monotonic()
        results = await asyncio.gather(*(start_one() for _ in range(count)))
        wall = (time.monotonic() - began) * 1000
    return [r[0] for r in results], wall, [r[1] for r in results]


async def create_sessions(cluster: Cluster, count: int) -> list[str]:
    base = f"{cluster.url}/apis/{cluster.group}/{cluster.version}/namespaces/{NAMESPACE}"
    names = [f"s{i:03d}" for i in range(count)]
    headers = {"Authorization": "Bearer emulator"}
    async with aiohttp.ClientSession(headers=headers) as http:

        async def create(name: str) -> None:
            body = {
                "apiVersion": f"{cluster.group}/{cluster.version}",
                "kind": "SandboxSession",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {"kernelName": KERNEL_NAME},
            }
            async with http.post(f"{base}/{cluster.plural}", json=body) as response:
                response.raise_for_status()

        await asyncio.gather(*(create(name) for name in names))
    return names


def session_latencies(
    cluster: Cluster, names: list[str], timeout: float
) -> tuple[list[float], float]:
    """Wait until every session is Ready; (latency per session in ms, wall time in ms)."""
    deadline = time.monotonic() + timeout
    wanted = set(names)
    # Watch the API server's own write log (in process) rather than polling it over HTTP,
    # which would load the server being measured.
    while len(_phases(cluster, wanted, "Ready")) < len(wanted):
        failed = _phases(cluster, wanted, "Failed")
        if failed or time.monotonic() > deadline:
            raise RuntimeError(f"sessions not Ready in time; failed: {sorted(failed)[:3]}")
        time.sleep(0.1)
    created: dict[str, float] = {}
    readied: dict[str, float] = {}
    for write in cluster.writes():
        if write.namespace != NAMESPACE or write.name not in wanted:
            continue
        if write.action == "create":
            created.setdefault(write.name, write.at)
        elif (
            write.subresource == "status"
            and isinstance(write.data, dict)
            and (write.data.get("status") or {}).get("phase") == "Ready"
        ):
            readied.setdefault(write.name, write.at)
    latencies = [(readied[n] - created[n]) * 1000 for n in names]
    wall = (max(readied.values()) - min(created.values())) * 1000
    return latencies, wall


def own_share(cluster: Cluster, controller: Controller, names: list[str]) -> list[float]:
    """Per session, the part of create → Ready that is the controller's and the API server's
    own (ms): create → finalizer stored (kopf's first round trip) plus handler done → Ready
    stored (the status write); the handler's gateway calls in between are excluded."""
    stored: dict[tuple[str, str], float] = {}
    for write in cluster.writes():
        if write.name not in names:
            continue
        if write.action == "create":
            stored.setdefault((write.name, "created"), write.wall)
        elif write.action == "update" and isinstance(write.data, list):
            stored.setdefault((write.name, "finalizer"), write.wall)
        elif (
            write.subresource == "status"
            and isinstance(write.data, dict)
            and (write.data.get("status") or {}).get("phase") == "Ready"
        ):
            stored.setdefault((write.name, "ready"), write.wall)
    done: dict[str, float] = {}
    pattern = re.compile(
        r"^\[(\S+ \S+)\] .*\[" + NAMESPACE + r"/(\S+)\] Handler 'ensure' succeeded"
    )
    for line in controller.log_path.read_text(errors="replace").splitlines():
        match = pattern.match(line)
        if match and match.group(2) in names:
            moment = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            done.setdefault(match.group(2), moment)
    known = [n for n in names if n in done and (n, "finalizer") in stored]
    before = [(stored[(n, "finalizer")] - stored[(n, "created")]) * 1000 for n in known]
    after = [(stored[(n, "ready")] - done[n]) * 1000 for n in known]
    if known:
        print(
            f"p50 create → finalizer stored {statistics.median(before):.1f} ms, "
            f"handler done → Ready stored {statistics.median(after):.1f} ms"
        )
    return [b + a for b, a in zip(before, after, strict=True)]


def _phases(cluster: Cluster, names: set[str], phase: str) -> set[str]:
    """Names whose status was written with ``phase`` at least once."""
    return {
        w.name
        for w in cluster.writes()
        if w.name in names
        and w.subresource == "status"
        and isinstance(w.data, dict)
        and (w.data.get("status") or {}).get("phase") == phase
    }


def wait_for_controller(controller: Controller, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while "controller started; gateway" not in controller.log():
        if controller.proc is not None and controller.proc.poll() is not None:
            raise RuntimeError(f"controller exited:\n{controller.log()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"controller not up:\n{controller.log()}")
        time.sleep(0.1)
    time.sleep(1.0)  # the watch streams open right after the startup activities


def wait_no_kernels(gateway: Gateway, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while gateway.kernels():  # pooled kernels are not listed
        if time.monotonic() > deadline:
            raise RuntimeError("kernels left on the gateway")
        time.sleep(0.2)


def gateway_samples(gateway: Gateway) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the gateway's ``GET /metrics``, keyed by name and labels."""
    response = requests.get(f"{gateway.http}/metrics", timeout=10)
    response.raise_for_status()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def wait_pool_full(gateway: Gateway, size: int, timeout: float = 900) -> None:
    """Until the gateway's python3 pool holds ``size`` ready kernels and starts none."""
    ready = ("sandbox_pool_kernels", frozenset({("kernelspec", KERNEL_NAME), ("state", "ready")}))
    starting = (ready[0], frozenset({("kernelspec", KERNEL_NAME), ("state", "starting")}))
    deadline = time.monotonic() + timeout
    while True:
        samples = gateway_samples(gateway)
        if samples.get(ready) == size and samples.get(starting) == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"pool not full after {timeout:.0f} s: {samples.get(ready)} ready, "
                f"{samples.get(starting)} starting, of {size}"
            )
        time.sleep(0.5)


class StartCounter:
    """The gateway's python3 starts (warm/cold, with reason) and start times between two reads."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.before = gateway_samples(gateway)

    def phase(self, latencies: list[float], wall: float) -> Phase:
        after = gateway_samples(self.gateway)

        def delta(name: str, **labels: str) -> float:
            key = (name, frozenset({"kernelspec": KERNEL_NAME, **labels}.items()))
            return after.get(key, 0.0) - self.before.get(key, 0.0)

        starts: Starts = collections.Counter()
        for name, labels in after:
            found = dict(labels)
            if name == "sandbox_kernel_starts_total" and found.get("kernelspec") == KERNEL_NAME:
                source, reason = found["source"], found["reason"]
                started = round(delta(name, source=source, reason=reason))
                if started:
                    starts[(source, reason)] = started
        mean_ms = {}
        for source in ("warm", "cold"):
            timed = delta("sandbox_kernel_start_seconds_count", source=source)
            if timed:
                total = delta("sandbox_kernel_start_seconds_sum", source=source)
                mean_ms[source] = total / timed * 1000
        self.before = after
        return Phase(latencies, wall, starts, mean_ms)


def run_setup(setup: Setup, count: int, settle: float, idle_kernels: bool) -> Outcome:
    """Both phases on a fresh gateway, API server and controller of this configuration."""
    print(f"\n--- {setup.label} ---", flush=True)
    with contextlib.ExitStack() as stack:
        gateway = Gateway(env=setup.env).start(wait=False)
        stack.callback(_kill_leftovers, gateway)
        stack.callback(gateway.stop)
        if idle_kernels:
            # Kernels inherit the gateway's scheduling policy.  On a cluster a kernel boots in
            # its own pod on some node; here 50 kernel boots (~1 CPU-second each) share 2 cores
            # with the API server emulator and the controller, and would be measured as their
            # latency.  SCHED_IDLE runs the gateway and its kernels only when nothing else wants
            # the CPU.  Every path runs under the same policy: set before the gateway is up,
            # since a pool starts filling as the gateway starts (and refills during a phase).
            assert gateway._proc is not None
            os.sched_setscheduler(gateway._proc.pid, os.SCHED_IDLE, os.sched_param(0))
        gateway.wait_ready()
        cluster = Cluster().start()
        stack.callback(cluster.stop)
        metrics_port = free_port()
        controller = Controller(
            cluster,
            gateway.http,
            env={
                "SANDBOX_CHECK_INTERVAL_SECONDS": "600",
                "SANDBOX_GC_INTERVAL_SECONDS": "3600",
                "SANDBOX_METRICS_PORT": str(metrics_port),
            },
            verbose=False,
        )
        stack.callback(controller.stop)
        controller.start()
        wait_for_controller(controller)
        _ready_to_measure(gateway, setup, settle)

        counter = StartCounter(gateway)
        direct, direct_wall, ids = asyncio.run(direct_starts(gateway, count))
        direct_phase = counter.phase(direct, direct_wall)
        asyncio.run(_shutdown_all(gateway, ids))
        wait_no_kernels(gateway, timeout=300)
        _ready_to_measure(gateway, setup, settle)  # the kernels' exits, the pool's refill

        assert controller.proc is not None
        cpu_before = _process_cpu(controller.proc.pid), cluster.call(lambda _: time.thread_time())
        counter = StartCounter(gateway)
        names = asyncio.run(create_sessions(cluster, count))
        via, via_wall = session_latencies(cluster, names, timeout=300)
        controller_phase = counter.phase(via, via_wall)
        cpu_after = _process_cpu(controller.proc.pid), cluster.call(lambda _: time.thread_time())
        print(
            f"CPU used while creating: controller {cpu_after[0] - cpu_before[0]:.2f} s, "
            f"API server emulator {cpu_after[1] - cpu_before[1]:.2f} s"
        )
        print(_handler_durations(metrics_port))
        share = own_share(cluster, controller, names)
        for label, phase in (("direct", direct_phase), ("controller", controller_phase)):
            times = ", ".join(f"{s} {ms:.1f} ms" for s, ms in phase.gateway_start_ms.items())
            print(f"{label}: mean time in the gateway's start handler: {times}")
        if setup.pool_size and any(
            s == "cold" for s, _ in direct_phase.starts + controller_phase.starts
        ):
            print("cold starts with a pool; the gateway's log says:")
            for line, seen in _pool_log(gateway).most_common():
                print(f"  {seen}x {line}")
        for name in names:
            cluster.delete(NAMESPACE, name)
        wait_no_kernels(gateway, timeout=300)
    return Outcome(setup, direct_phase, controller_phase, share)


def _ready_to_measure(gateway: Gateway, setup: Setup, settle: float) -> None:
    """A full pool (when there is one), then ``settle`` idle seconds for the CPU."""
    if setup.pool_size:
        began = time.monotonic()
        wait_pool_full(gateway, setup.pool_size)
        print(f"pool full ({setup.pool_size} ready) after {time.monotonic() - began:.1f} s")
    time.sleep(settle)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=50, help="sessions/kernels (default 50)")
    parser.add_argument("--settle", type=float, default=5.0, help="idle seconds between phases")
    parser.add_argument(
        "--pool-size",
        type=int,
        default=None,
        help="pooled python3 kernels of the warm-pool gateway (default: --sessions, so that "
        "every start of a phase is served warm)",
    )
    parser.add_argument(
        "--no-pool-phase",
        dest="pool_phase",
        action="store_false",
        help="measure only the gateway without a pool",
    )
    parser.add_argument(
        "--no-idle-kernels",
        dest="idle_kernels",
        action="store_false",
        help="run the gateway and kernels at normal priority instead of SCHED_IDLE",
    )
    args = parser.parse_args(argv)
    count: int = args.sessions
    pool_size: int = count if args.pool_size is None else args.pool_size
    if pool_size < 1:
        parser.error("--pool-size must be at least 1 (--no-pool-phase skips the pool)")

    setups = [Setup("no pool", 0)]
    if args.pool_phase:
        # Claimed kernels keep their slot and the pool refills behind them: up to
        # sessions + pool kernels at once, which must fit under the gateway's cap or the
        # refill fails (and backs off) while a phase runs.
        cap = max(TESTKIT_MAX_KERNELS, count + pool_size)
        env = {"SANDBOX_POOL": f"{KERNEL_NAME}={pool_size}", "SANDBOX_MAX_KERNELS": str(cap)}
        setups.append(Setup(f"pool of {pool_size}", pool_size, env))

    load_before = os.getloadavg()
    outcomes = [run_setup(s, count, args.settle, args.idle_kernels) for s in setups]
    load_after = os.getloadavg()

    print(
        f"\n{count} kernels at once, local kernels, {_cpus()} CPUs, load average "
        f"{load_before[0]:.1f} at start, {load_after[0]:.1f} at end; controller/ {_revision()}\n"
    )
    print_table(outcomes)
    return 0


def print_table(outcomes: list[Outcome]) -> None:
    print("| gateway | path | starts | p50 ms | p90 ms | max ms | all ready ms |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for outcome in outcomes:
        label = outcome.setup.label
        for path, phase in (("direct", outcome.direct), ("controller", outcome.controller)):
            values = phase.latencies
            print(
                f"| {label} | {path} | {_describe_starts(phase.starts)} "
                f"| {statistics.median(values):.1f} | {pct(values, 0.9):.1f} "
                f"| {max(values):.1f} | {phase.wall:.1f} |"
            )
    for outcome in outcomes:
        label = outcome.setup.label
        overhead = statistics.median(outcome.controller.latencies) - statistics.median(
            outcome.direct.latencies
        )
        verdict = "meets" if overhead <= TARGET_MS else "misses"
        print(
            f"| {label} | overhead per session (p50 controller - p50 direct) | | {overhead:.1f} "
            f"| | | {verdict} the {TARGET_MS:.0f} ms target |"
        )
        share = outcome.share
        if share:
            print(
                f"| {label} | controller + API server share (create → finalizer + handler done "
                f"→ Ready) | | {statistics.median(share):.1f} | {pct(share, 0.9):.1f} "
                f"| {max(share):.1f} | |"
            )
    if len(outcomes) == 2:
        cold, warm = (o.controller for o in outcomes)
        gain = statistics.median(cold.latencies) - statistics.median(warm.latencies)
        print(
            f"| {outcomes[1].setup.label} vs {outcomes[0].setup.label} | create → Ready, "
            f"p50 saved per session | | {gain:.1f} | | | "
            f"{statistics.median(cold.latencies) / statistics.median(warm.latencies):.1f}x "
            f"faster at p50, all ready {cold.wall / warm.wall:.1f}x sooner |"
        )


def _describe_starts(starts: Starts) -> str:
    warm = sum(n for (source, _), n in starts.items() if source == "warm")
    cold = {reason: n for (source, reason), n in starts.items() if source == "cold"}
    reasons = ", ".join(f"{reason or '?'} {n}" for reason, n in sorted(cold.items()))
    return f"{warm} warm / {sum(cold.values())} cold" + (f" ({reasons})" if reasons else "")


def _pool_log(gateway: Gateway) -> collections.Counter[str]:
    """The gateway's log lines about pool misses and failed claims or refills, counted."""
    wanted = ("pool miss", "failed its claim", "cannot start a kernel", "replacing it")
    uuid_text = re.compile(r"[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}")
    lines: collections.Counter[str] = collections.Counter()
    for line in gateway.log_path.read_text(errors="replace").splitlines():
        if any(w in line for w in wanted):
            # Without the time stamp and ids, so that alike lines count together.
            lines[uuid_text.sub("<id>", line.split("]", 1)[-1].strip())] += 1
    return lines


def _kill_leftovers(gateway: Gateway) -> None:
    """SIGKILL kernel processes of this gateway that outlived it (local kernels run in sessions
    of their own; a pooled kernel whose start was cut by the gateway's stop can remain)."""
    home = str(gateway.log_path.parent)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:  # a process may end meanwhile
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "ipykernel" in command and home in command:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
                print(f"killed a kernel left behind: {entry.name}", file=sys.stderr)


def _revision() -> str:
    """The controller code the run used: the commit that last changed it, and whether the
    working tree differs from it (the pool needs no controller change)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("log", "-1", "--format=%h", "--", "controller")
    changed = git("status", "--porcelain", "--", "controller")
    return f"as of {commit or 'unknown'}" + (", with local changes" if changed else ", unchanged")


def _handler_durations(port: int) -> str:
    """Mean duration of the controller's ensure handler (gateway calls), from its metrics."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    values = {}
    for line in text.splitlines():
        for kind in ("sum", "count"):
            prefix = f'sandbox_controller_reconcile_duration_seconds_{kind}{{handler="ensure"}}'
            if line.startswith(prefix):
                values[kind] = float(line.split()[-1])
    if not values.get("count"):
        return "ensure handler: no samples"
    mean = values["sum"] / values["count"] * 1000
    return f"ensure handler (gateway calls): mean {mean:.1f} ms over {values['count']:.0f} runs"


async def _shutdown_all(gateway: Gateway, kernel_ids: list[str]) -> None:
    """Shut the direct kernels down; a slow answer is fine, wait_no_kernels checks the end."""
    async with aiohttp.ClientSession() as http:
        perform = proto.rest_performer_async(http)
        flows = [
            proto.run_flow_async(
                proto.shutdown_flow(proto.KernelRef(gateway.http, "", k, "")), perform
            )
            for k in kernel_ids
        ]
        for outcome in await asyncio.gather(*flows, return_exceptions=True):
            if isinstance(outcome, Exception):
                print(f"shutdown: {outcome}", file=sys.stderr)


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    raise SystemExit(main())
