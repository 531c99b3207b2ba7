"""SandboxSessions on the real single-node cluster (``./test_env.sh --kubernetes``): one table.

Rows, measured side by side in one run (the warm, cold and bare-pod samples interleaved, so
that load from elsewhere falls on all three alike):

1. warm: a SandboxSession without resources (served from the gateway's pool of one python3
   kernel) from ``POST`` to ``status.phase == Ready``, and to the first result of
   ``execute("1+1")`` through the client at the ingress URL.  Before each sample the bench waits,
   untimed, until the pool is full again.
2. cold: the same with ``spec.resources`` set (``--cold-cpu`` 1, ``--cold-memory`` 256Mi, the
   chart's default kernel CPU; the pool never serves a session that sets resources).
3. the floor: a bare pod of the kernel image (``sleep``, the kernel pod's security context and
   the same size) from ``POST`` to ``status.phase == Running``.
4. ``--burst`` (50) sessions created at once (each ``--burst-cpu`` 20m, ``--burst-memory``
   192Mi), each to Ready and to its first result; and the wall time until all had one.
5. the control plane and node processes idle, over ``--idle-seconds`` (20): resident memory and
   CPU (% of one core) of each, and in total.

The API is polled every 10 ms over one kept-alive connection, so a phase is seen within ~10 ms
of being written.  Targets: warm -> first result <= 100 ms p50; cold -> Ready <= 1.5x the floor.

    python bench/bench_k8s.py                         # about 5 minutes on 2 cores
    python bench/bench_k8s.py --runs 3 --burst 10     # quick
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import requests
import yaml  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jupyter_kernel_client import GatewayKernelSession
from testkit.cluster.cluster import RELEASE_NAMESPACE, VERSION, Cluster

SESSIONS = "/apis/minisandbox.dev/v1alpha1/namespaces/e2e/sandboxsessions"
FLOOR_NS = "bench-floor"
KERNEL_NS = f"{RELEASE_NAMESPACE}-kernels"


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class Api:
    """The API server, as the cluster's admin, over one kept-alive connection per thread."""

    def __init__(self, cluster: Cluster) -> None:
        config = yaml.safe_load(cluster.kubeconfig.read_text())
        self.url = config["clusters"][0]["cluster"]["server"]
        self.ca = config["clusters"][0]["cluster"]["certificate-authority"]
        user = config["users"][0]["user"]
        self.cert = (user["client-certificate"], user["client-key"])
        self._local = threading.local()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.cert = self.cert
        reply = session.request(method, self.url + path, verify=self.ca, timeout=30, **kwargs)
        if reply.status_code >= 400 and not (method == "DELETE" and reply.status_code == 404):
            raise RuntimeError(f"{method} {path}: {reply.status_code} {reply.text[:300]}")
        return reply.json() if reply.content else None

    def wait(self, path: str, done: Any, timeout: float = 300) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.call("GET", path)
            if done(found):
                return found
            time.sleep(0.01)
        raise TimeoutError(f"{path} not done in {timeout:.0f}s")


def session_sample(api: Api, token: str, resources: dict[str, str] | None) -> tuple[float, float]:
    """Seconds from POST to Ready, and to the first result."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    spec: dict[str, Any] = {"kernelName": "python3", "idleTimeoutSeconds": 600}
    if resources:
        spec["resources"] = resources
    body = {
        "apiVersion": "minisandbox.dev/v1alpha1",
        "kind": "SandboxSession",
        "metadata": {"name": name},
        "spec": spec,
    }
    started = time.monotonic()
    api.call("POST", SESSIONS, json=body)
    try:
        found = api.wait(
            f"{SESSIONS}/{name}", lambda s: s.get("status", {}).get("phase") in ("Ready", "Failed")
        )
        ready = time.monotonic() - started
        status = found["status"]
        if status["phase"] != "Ready":
            raise RuntimeError(f"{name} failed: {status}")
        with GatewayKernelSession(
            status["gatewayUrl"], status["websocketUrl"], "python3", kernel_id=status["kernelId"]
        ) as kernel:
            if str(kernel.execute("1+1")) != "2":
                raise RuntimeError("wrong result")
            result = time.monotonic() - started
        return ready, result
    finally:
        api.call("DELETE", f"{SESSIONS}/{name}")


def floor_sample(api: Api, size: dict[str, str]) -> float:
    """Seconds from POST of a bare kernel-image pod to Running."""
    name = f"floor-{uuid.uuid4().hex[:8]}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 0,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "runAsGroup": 100,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "kernel",
                    "image": f"mini-jupyter-sandbox/kernel-python:{VERSION}",
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sleep", "600"],
                    "resources": {"requests": size, "limits": size},
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }
    path = f"/api/v1/namespaces/{FLOOR_NS}/pods"
    started = time.monotonic()
    api.call("POST", path, json=pod)
    api.wait(f"{path}/{name}", lambda p: p.get("status", {}).get("phase") == "Running")
    elapsed = time.monotonic() - started
    api.call("DELETE", f"{path}/{name}", json={"gracePeriodSeconds": 0})
    return elapsed


def pool_full(cluster: Cluster, token: str) -> bool:
    from tests.e2e.k8s.conftest import gateway_metrics

    ready = 'sandbox_pool_kernels{kernelspec="python3",state="ready"} 1.0'
    return ready in gateway_metrics(cluster, token)


def wait_pool(cluster: Cluster, token: str) -> None:
    deadline = time.monotonic() + 180
    while not pool_full(cluster, token):
        if time.monotonic() > deadline:
            raise TimeoutError("the warm pool did not refill")
        time.sleep(0.5)


def wait_no_kernels(api: Api, keep: int = 1) -> None:
    """Until only the pool's pods are left in the kernel namespace (the previous sample gone)."""
    api.wait(
        f"/api/v1/namespaces/{KERNEL_NS}/pods",
        lambda pods: len(pods["items"]) <= keep,
        timeout=300,
    )


def burst(api: Api, token: str, count: int, cpu: str, memory: str) -> tuple[list, list, float]:
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        futures = [
            pool.submit(session_sample, api, token, {"cpu": cpu, "memory": memory})
            for _ in range(count)
        ]
        samples = [future.result() for future in futures]
    wall = time.monotonic() - started
    return [s[0] for s in samples], [s[1] for s in samples], wall


def process_usage(cluster: Cluster, seconds: float) -> list[tuple[str, float, float]]:
    """(name, resident MiB, % of one core) of each cluster process, over ``seconds`` idle."""
    ticks = os.sysconf("SC_CLK_TCK")

    def cpu(pid: int) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / ticks

    running = cluster.processes.running()
    before = {pid: cpu(pid) for pid, _ in running}
    time.sleep(seconds)
    usage = []
    for pid, name in running:
        status = Path(f"/proc/{pid}/status").read_text()
        rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
        usage.append((name, rss / 1024, 100 * (cpu(pid) - before[pid]) / seconds))
    return usage


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def row(label: str, samples: list[float], note: str = "") -> str:
    return (
        f"| {label} | {len(samples)} | {1000 * statistics.median(samples):.0f} ms "
        f"| {1000 * pct(samples, 0.99):.0f} ms | {note} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--cold-cpu", default="1")
    parser.add_argument("--cold-memory", default="256Mi")
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--burst-cpu", default="20m")
    parser.add_argument("--burst-memory", default="192Mi")
    parser.add_argument("--idle-seconds", type=float, default=20)
    args = parser.parse_args()

    cluster = Cluster()
    if not cluster.is_up():
        sys.exit("no cluster is up: ./test_env.sh --kubernetes starts one")
    token = cluster.exports()["JUPYTER_GATEWAY_AUTH_TOKEN"]
    os.environ["JUPYTER_GATEWAY_AUTH_TOKEN"] = token  # the client's default: the e2e tenant
    api = Api(cluster)
    if not cluster.kubectl("get", "namespace", FLOOR_NS, check=False):
        cluster.kubectl("create", "namespace", FLOOR_NS)
    if not cluster.kubectl("get", "namespace", "e2e", check=False):
        cluster.kubectl("create", "namespace", "e2e")

    warm_ready, warm_result, cold_ready, cold_result, floor = [], [], [], [], []
    for run in range(args.runs):
        progress(f"run {run + 1}/{args.runs}")
        wait_no_kernels(api)
        wait_pool(cluster, token)
        ready, result = session_sample(api, token, None)
        warm_ready.append(ready)
        warm_result.append(result)
        wait_no_kernels(api)
        size = {"cpu": args.cold_cpu, "memory": args.cold_memory}
        ready, result = session_sample(api, token, size)
        cold_ready.append(ready)
        cold_result.append(result)
        floor.append(floor_sample(api, size))

    wait_no_kernels(api)
    progress(f"{args.burst} sessions at once")
    burst_ready, burst_result, burst_wall = burst(
        api, token, args.burst, args.burst_cpu, args.burst_memory
    )
    wait_no_kernels(api)
    progress(f"idle for {args.idle_seconds:.0f}s")
    usage = process_usage(cluster, args.idle_seconds)

    floor_p50 = statistics.median(floor)
    warm_p50 = statistics.median(warm_result)
    cold_p50 = statistics.median(cold_ready)
    print(f"SandboxSessions on the local cluster ({os.cpu_count()} cores), {args.runs} runs\n")
    print("| measure | n | p50 | p99 | note |")
    print("|---|---|---|---|---|")
    print(row("warm: create -> Ready", warm_ready))
    target = "met" if warm_p50 <= 0.100 else "NOT met"
    print(row("warm: create -> first result", warm_result, f"target <= 100 ms p50: {target}"))
    ratio = cold_p50 / floor_p50
    target = "met" if ratio <= 1.5 else "NOT met"
    print(
        row(
            "cold: create -> Ready",
            cold_ready,
            f"{ratio:.1f}x the floor (target <= 1.5x): {target}",
        )
    )
    print(row("cold: create -> first result", cold_result))
    print(row("floor: bare kernel-image pod -> Running", floor))
    cpu = f"{args.burst_cpu} CPU, {args.burst_memory} each"
    print(row(f"{args.burst} at once: create -> Ready", burst_ready, cpu))
    note = f"all {args.burst} answered after {burst_wall:.1f} s"
    print(row(f"{args.burst} at once: create -> first result", burst_result, note))
    print()
    print(f"Idle over {args.idle_seconds:.0f} s (the node's pods not included):\n")
    print("| process | resident | CPU (% of a core) |")
    print("|---|---|---|")
    for name, rss, share in usage:
        print(f"| {name} | {rss:.0f} MiB | {share:.1f} |")
    total_rss = sum(u[1] for u in usage)
    total_cpu = sum(u[2] for u in usage)
    print(f"| total | {total_rss:.0f} MiB | {total_cpu:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
