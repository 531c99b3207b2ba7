"""Kernel cold start to first result in a container, beside its floors.

Rows (p50 / p99 / mean over --runs starts each):

* ``sandbox launcher, own network``: the compose gateway (project launcher, hardened container,
  a private network per kernel, the gateway's firewall): POST /api/kernels, open the websocket,
  execute ``1 + 1`` — until the result arrives.  A cold start: kernelspec ``sandbox-python``,
  which the compose stack does not pool, and the gateway's ``sandbox_kernel_starts_total``
  must count every start of the row as cold, or the bench stops (a warm start is
  ``bench_pool.py``'s row, not this one).
* ``sandbox launcher, shared network (before)``: the launcher as it was before containment
  (``BEFORE_CONTAINMENT``, read from git), every kernel on one shared internal network, in a
  throw-away gateway container of the same image: what containment costs per start.
* ``stock launcher``: the same gateway image and kernel image, but the kernel started by
  gateway_provisioners' ``launch_docker.py`` (docker SDK, EG's default 0.5 s poll interval, no
  hardening).  The launcher is fetched with ``pip download`` into a temporary directory, mounted
  into a throw-away gateway container and never installed.
* ``docker run import ipykernel``: ``docker run --rm`` of the kernel image importing ipykernel.
* ``docker run true``: a trivial container of the same image.
* ``execute round trip``: ``1 + 1`` on an already-started kernel through the compose gateway
  and through the shared-network gateway, interleaved with the raw-ZMQ floor.

Needs the compose stack up (``docker-compose up -d``) and the images built (images/build.sh)::

    python bench/bench_containers.py --runs 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

import bench_client  # bench/ is on sys.path when run as a script

from jupyter_kernel_client import GatewayKernelSession
from testkit.compose import metric
from testkit.gateway import LAUNCHER_ARGUMENTS

VERSION = os.environ.get("SANDBOX_VERSION", "0.1.0")
KERNEL_IMAGE = f"mini-jupyter-sandbox/kernel-python:{VERSION}"
GATEWAY_IMAGE = f"mini-jupyter-sandbox/gateway:{VERSION}"
STOCK_GATEWAY = "mjs-bench-stock-gateway"
BEFORE_GATEWAY = "mjs-bench-before-gateway"
SHARED_NETWORK = "mjs-bench-shared-kernels"
# The last commit whose launcher put every kernel on one shared network.
BEFORE_CONTAINMENT = "652722e"
REPO = Path(__file__).resolve().parents[1]
# The compose stack pools python3 only (SANDBOX_POOL=python3=2): a start of this one is cold.
COLD_KERNEL = "sandbox-python"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def measure(runs: int, once: Callable[[], float | None]) -> list[float]:
    """Time ``once`` ``runs`` times; it may return its own duration (to exclude clean-up)."""
    once()  # warm-up: page cache, image layers, imports on the gateway side
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        own = once()
        samples.append(own if own is not None else time.perf_counter() - start)
    return samples


def cold_start(gateway_http: str, kernel_name: str = "python3") -> Callable[[], float]:
    gateway_ws = gateway_http.replace("http", "ws", 1)

    def once() -> float:
        start = time.perf_counter()
        session = GatewayKernelSession(gateway_http, gateway_ws, kernel_name, startup_timeout=60)
        try:
            session.start()
            result = session.execute("1 + 1")
            elapsed = time.perf_counter() - start
        finally:
            session.shutdown()  # not timed: the kernel's shutdown is not part of its start
        if str(result) != "2":
            raise RuntimeError(f"unexpected result {result!r}")
        return elapsed

    return once


def cold_starts(gateway_http: str, kernel_name: str) -> float:
    """The gateway's count of cold starts of ``kernel_name`` (its /metrics, read as the tenant
    of JUPYTER_GATEWAY_AUTH_TOKEN, which the README's stack allows to read them)."""
    token = os.environ.get("JUPYTER_GATEWAY_AUTH_TOKEN", "")
    headers = {"Authorization": f"token {token}"} if token else None
    return metric(
        gateway_http,
        "sandbox_kernel_starts_total",
        headers=headers,
        kernelspec=kernel_name,
        source="cold",
    )


def docker_run(*command: str) -> Callable[[], None]:
    def once() -> None:
        subprocess.run(
            ["docker", "run", "--rm", "--network", "none", KERNEL_IMAGE, *command],
            check=True,
            capture_output=True,
        )

    return once


def stock_launcher_script(workdir: Path) -> Path:
    """gateway_provisioners' Docker launcher, read from its wheel (not installed)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-q",
            "-d",
            str(workdir),
            "gateway_provisioners==0.5.0",
        ],
        check=True,
    )
    wheel = next(workdir.glob("gateway_provisioners-*.whl"))
    member = "gateway_provisioners/kernel-launchers/docker/scripts/launch_docker.py"
    target = workdir / "launch_docker.py"
    with zipfile.ZipFile(wheel) as archive:
        target.write_bytes(archive.read(member))
    return target


def stock_kernelspec() -> dict[str, object]:
    return {
        "display_name": "Python 3 (stock gateway_provisioners launcher)",
        "language": "python",
        "metadata": {
            "process_proxy": {
                "class_name": "enterprise_gateway.services.processproxies.docker_swarm."
                "DockerProcessProxy",
                "config": {"image_name": KERNEL_IMAGE},
            }
        },
        # The three workarounds the stock launcher needs under EG 3.3: its mode
        # variable, a PATH for it to pop, and nothing else.
        "env": {"DOCKER_MODE": "docker", "PATH": "/opt/eg/bin:/usr/bin:/bin"},
        "argv": [
            "/opt/eg/bin/python",
            "/opt/launcher/launch_docker.py",
            *LAUNCHER_ARGUMENTS,
        ],
    }


def before_kernelspec() -> dict[str, object]:
    spec = json.loads((REPO / "kernels" / "python3" / "kernel.json").read_text())
    spec["metadata"]["process_proxy"]["class_name"] = (
        "enterprise_gateway.services.processproxies.docker_swarm.DockerProcessProxy"
    )
    # The launcher of that time was a script, not the installed sandbox_gateway.launchers.docker.
    module = spec["argv"].index("-m")
    spec["argv"][module : module + 2] = ["/opt/launcher/launch_docker.py"]
    return dict(spec)


def before_launcher_script(workdir: Path) -> Path:
    """The project's launcher as of BEFORE_CONTAINMENT (one shared kernel network)."""
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{BEFORE_CONTAINMENT}:kernels/launcher/launch_docker.py"],
        check=True,
        capture_output=True,
    ).stdout
    target = workdir / "launch_docker.py"
    target.write_bytes(source)
    return target


def shared_network() -> str:
    """An internal network for every kernel of the throw-away gateways (the old design)."""
    subprocess.run(["docker", "network", "rm", SHARED_NETWORK], capture_output=True, check=False)
    subprocess.run(
        [
            "docker",
            "network",
            "create",
            "--internal",
            "-o",
            "com.docker.network.bridge.inhibit_ipv4=true",
            SHARED_NETWORK,
        ],
        check=True,
        capture_output=True,
    )
    return SHARED_NETWORK


def start_throwaway_gateway(
    name: str, launcher: Path, spec_name: str, spec: dict[str, object], workdir: Path, poll: str
) -> str:
    """A gateway container of the project's image, on the shared kernel network, whose only
    kernelspec runs ``launcher``; returns its URL."""
    spec_dir = workdir / "kernels" / spec_name
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--init",
            "--name",
            name,
            "--entrypoint",
            "",  # no firewall: kernels of the old design reach the gateway on one network
            "-p",
            "127.0.0.1::8889",
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            "-v",
            f"{launcher}:/opt/launcher/launch_docker.py:ro",
            "-v",
            f"{workdir / 'kernels'}:/opt/bench-kernels/kernels:ro",
            "-e",
            f"EG_DOCKER_NETWORK={SHARED_NETWORK}",
            "-e",
            "EG_RESPONSE_IP=" + name,
            "-e",
            "EG_RESPONSE_ADDR_ANY=true",
            "-e",
            f"EG_POLL_INTERVAL={poll}",
            "-e",
            "JUPYTER_PATH=/opt/bench-kernels",
            GATEWAY_IMAGE,
            "jupyter",
            "enterprisegateway",
            "--config=/etc/sandbox-gateway/jupyter_enterprise_gateway_config.py",
            "--ip=0.0.0.0",
            "--port=8889",
            "--KernelSpecManager.ensure_native_kernel=False",
        ],
        check=True,
        capture_output=True,
    )
    # Published ports need a non-internal network; the kernel network is joined second.
    subprocess.run(
        ["docker", "network", "connect", SHARED_NETWORK, name], check=True, capture_output=True
    )
    port = (
        subprocess.run(
            ["docker", "port", name, "8889/tcp"], check=True, capture_output=True, text=True
        )
        .stdout.split(":")[-1]
        .strip()
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/api/kernelspecs", timeout=2)
            return url
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"the throw-away gateway {name} did not come up")


def round_trips(gateway: str, kernel_name: str, count: int) -> Callable[[], list[float]]:
    """A started kernel behind ``gateway``; each call times ``count`` executes of ``1 + 1``."""
    session = GatewayKernelSession(gateway, gateway.replace("http", "ws", 1), kernel_name)
    session.start()
    for _ in range(20):
        session.execute("1 + 1")

    def batch() -> list[float]:
        trips = []
        for _ in range(count):
            start = time.perf_counter()
            session.execute("1 + 1")
            trips.append(time.perf_counter() - start)
        return trips

    batch.session = session  # type: ignore[attr-defined]
    return batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--gateway", default=os.environ.get("GATEWAY_HTTP", "http://127.0.0.1:8889")
    )
    parser.add_argument("--no-stock", action="store_true", help="skip the stock launcher row")
    args = parser.parse_args()

    rows: list[tuple[str, list[float]]] = []
    network = shared_network()
    with tempfile.TemporaryDirectory() as tmp:
        # One directory per throw-away gateway: each bind-mounts its own launcher and kernelspecs.
        before_dir, stock_dir = Path(tmp) / "before", Path(tmp) / "stock"
        before_dir.mkdir()
        stock_dir.mkdir()
        try:
            before_url = start_throwaway_gateway(
                BEFORE_GATEWAY,
                before_launcher_script(before_dir),
                "python3",
                before_kernelspec(),
                before_dir,
                poll="0.05",
            )
            # Interleaved, so that load on the machine hits both alike.
            now_samples: list[float] = []
            before_samples: list[float] = []
            now_once = cold_start(args.gateway, COLD_KERNEL)
            before_once = cold_start(before_url)
            cold_before = cold_starts(args.gateway, COLD_KERNEL)
            now_once(), before_once()  # warm-up
            for _ in range(args.runs):
                now_samples.append(now_once())
                before_samples.append(before_once())
            cold = cold_starts(args.gateway, COLD_KERNEL) - cold_before
            if cold != args.runs + 1:
                raise SystemExit(
                    f"only {cold:.0f} of {args.runs + 1} starts of {COLD_KERNEL} were cold: the "
                    f"gateway pools it (SANDBOX_POOL), so the row would not measure a cold start"
                )
            rows.append(("start -> first result, own network (now)", now_samples))
            rows.append(("start -> first result, shared net (before)", before_samples))

            if not args.no_stock:
                stock_url = start_throwaway_gateway(
                    STOCK_GATEWAY,
                    stock_launcher_script(stock_dir),
                    "stock-python",
                    stock_kernelspec(),
                    stock_dir,
                    poll="0.5",  # EG's default: the stock path as it ships
                )
                rows.append(
                    (
                        "stock launcher: start -> first result",
                        measure(args.runs, cold_start(stock_url, "stock-python")),
                    )
                )
            rows.append(
                (
                    "docker run: python -c 'import ipykernel'",
                    measure(args.runs, docker_run("python", "-c", "import ipykernel")),
                )
            )
            rows.append(("docker run: true", measure(args.runs, docker_run("true"))))

            # Round trips through both gateways, interleaved with the raw-ZMQ floor (a local
            # ipykernel under jupyter_client, as in bench_client.py).
            now_trips = round_trips(args.gateway, "python3", 10)
            before_trips = round_trips(before_url, "python3", 10)
            compose: list[float] = []
            before: list[float] = []
            floor_trips: list[float] = []
            try:
                with bench_client.raw_zmq_client() as floor:
                    for _ in range(max(200, args.runs) // 10):
                        floor_trips += [ms / 1000 for ms in floor(10)]
                        compose += now_trips()
                        before += before_trips()
            finally:
                now_trips.session.shutdown()  # type: ignore[attr-defined]
                before_trips.session.shutdown()  # type: ignore[attr-defined]
            rows.append(("execute round trip, raw ZMQ floor (local)", floor_trips))
            rows.append(("execute round trip, own network (now)", compose))
            rows.append(("execute round trip, shared net (before)", before))
        except BaseException:
            for name in (BEFORE_GATEWAY, STOCK_GATEWAY):  # the throw-away gateways' side of it
                logs = subprocess.run(["docker", "logs", "--tail", "40", name], capture_output=True)
                print(
                    f"--- {name} log ---\n{logs.stderr.decode(errors='replace')}", file=sys.stderr
                )
            raise
        finally:
            subprocess.run(
                ["docker", "rm", "-f", STOCK_GATEWAY, BEFORE_GATEWAY], capture_output=True
            )
            subprocess.run(["docker", "network", "rm", network], capture_output=True)

    print(f"\n{'measurement':44} {'n':>4} {'p50 s':>8} {'p99 s':>8} {'mean s':>8}")
    for name, samples in rows:
        print(
            f"{name:44} {len(samples):>4} {percentile(samples, 50):>8.4f} "
            f"{percentile(samples, 99):>8.4f} {statistics.fmean(samples):>8.4f}"
        )
    start_p50 = percentile(rows[0][1], 50)
    cost = start_p50 - percentile(rows[1][1], 50)
    ratio = percentile(compose, 50) / percentile(floor_trips, 50)
    print(
        f"\ntargets: cold start p50 <= 0.7 s: {'met' if start_p50 <= 0.7 else 'NOT met'} "
        f"({start_p50:.3f} s, containment {cost * 1000:+.0f} ms per start); round trip p50 <= "
        f"1.3x raw ZMQ: {'met' if ratio <= 1.3 else 'NOT met'} ({ratio:.2f}x)"
    )


if __name__ == "__main__":
    main()
