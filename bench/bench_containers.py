"""Kernel cold start to first result in a container, beside its floors.

Rows (p50 / p99 / mean over --runs starts each):

* ``sandbox launcher``: the compose gateway (project launcher, hardened container): POST
  /api/kernels, open the websocket, execute ``1 + 1`` — until the result arrives.
* ``stock launcher``: the same gateway image and kernel image, but the kernel started by
  gateway_provisioners' ``launch_docker.py`` (the pre-issue path: docker SDK, EG's default 0.5 s
  poll interval, no hardening).  The launcher is fetched with ``pip download`` into a temporary
  directory, mounted into a throw-away gateway container and never installed.
* ``docker run import ipykernel``: ``docker run --rm`` of the kernel image importing ipykernel.
* ``docker run true``: a trivial container of the same image.
* ``execute round trip``: ``1 + 1`` on an already-started kernel through the gateway.

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

VERSION = os.environ.get("SANDBOX_VERSION", "0.1.0")
KERNEL_IMAGE = f"mini-jupyter-sandbox/kernel-python:{VERSION}"
GATEWAY_IMAGE = f"mini-jupyter-sandbox/gateway:{VERSION}"
STOCK_GATEWAY = "mjs-bench-stock-gateway"


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


def start_stock_gateway(network: str, workdir: Path) -> str:
    """A throw-away gateway whose only kernelspec uses the stock launcher."""
    launcher = stock_launcher_script(workdir)
    spec_dir = workdir / "kernels" / "stock-python"
    spec_dir.mkdir(parents=True)
    spec = {
        "display_name": "Python 3 (stock gateway_provisioners launcher)",
        "language": "python",
        "metadata": {
            "process_proxy": {
                "class_name": "enterprise_gateway.services.processproxies.docker_swarm."
                "DockerProcessProxy",
                "config": {"image_name": KERNEL_IMAGE},
            }
        },
        # The three workarounds the stock launcher needs under EG 3.3 (see issue 5): its mode
        # variable, a PATH for it to pop, and nothing else.
        "env": {"DOCKER_MODE": "docker", "PATH": "/opt/eg/bin:/usr/bin:/bin"},
        "argv": [
            "/opt/eg/bin/python",
            "/opt/stock/launch_docker.py",
            "--kernel-id",
            "{kernel_id}",
            "--port-range",
            "{port_range}",
            "--response-address",
            "{response_address}",
            "--public-key",
            "{public_key}",
        ],
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    subprocess.run(["docker", "rm", "-f", STOCK_GATEWAY], capture_output=True, check=False)
    subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--init",
            "--name",
            STOCK_GATEWAY,
            "-p",
            "127.0.0.1::8889",
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            "-v",
            f"{launcher}:/opt/stock/launch_docker.py:ro",
            "-v",
            f"{workdir / 'kernels'}:/opt/stock-kernels/kernels:ro",
            "-e",
            f"EG_DOCKER_NETWORK={network}",
            "-e",
            "EG_RESPONSE_IP=" + STOCK_GATEWAY,
            "-e",
            "EG_RESPONSE_ADDR_ANY=true",
            "-e",
            "EG_POLL_INTERVAL=0.5",  # EG's default: the stock path as it ships
            "-e",
            "JUPYTER_PATH=/opt/stock-kernels",
            GATEWAY_IMAGE,
        ],
        check=True,
        capture_output=True,
    )
    # Published ports need a non-internal network; the kernel network is joined second.
    subprocess.run(
        ["docker", "network", "connect", network, STOCK_GATEWAY], check=True, capture_output=True
    )
    port = (
        subprocess.run(
            ["docker", "port", STOCK_GATEWAY, "8889/tcp"],
            check=True,
            capture_output=True,
            text=True,
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
    raise RuntimeError("the stock-launcher gateway did not come up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--gateway", default=os.environ.get("GATEWAY_HTTP", "http://127.0.0.1:8889")
    )
    parser.add_argument(
        "--kernel-network",
        default=os.environ.get("SANDBOX_KERNEL_NETWORK", "mini-jupyter-sandbox-kernels"),
    )
    parser.add_argument("--no-stock", action="store_true", help="skip the stock launcher row")
    args = parser.parse_args()

    rows: list[tuple[str, list[float]]] = []
    rows.append(
        ("sandbox launcher: start -> first result", measure(args.runs, cold_start(args.gateway)))
    )
    if not args.no_stock:
        with tempfile.TemporaryDirectory() as tmp:
            # Docker bind-mounts need the directory to outlive this process' view: keep it
            # until the throw-away gateway is removed.
            try:
                stock_url = start_stock_gateway(args.kernel_network, Path(tmp))
                rows.append(
                    (
                        "stock launcher: start -> first result",
                        measure(args.runs, cold_start(stock_url, "stock-python")),
                    )
                )
            finally:
                subprocess.run(["docker", "rm", "-f", STOCK_GATEWAY], capture_output=True)
    rows.append(
        (
            "docker run: python -c 'import ipykernel'",
            measure(args.runs, docker_run("python", "-c", "import ipykernel")),
        )
    )
    rows.append(("docker run: true", measure(args.runs, docker_run("true"))))

    # The round trip through the compose gateway, interleaved with the raw-ZMQ floor (a local
    # ipykernel under jupyter_client, as in bench_client.py) so machine load hits both alike.
    gateway_ws = args.gateway.replace("http", "ws", 1)
    compose_trips: list[float] = []
    floor_trips: list[float] = []
    with (
        GatewayKernelSession(args.gateway, gateway_ws, "python3") as session,
        bench_client.raw_zmq_client() as floor,
    ):
        for _ in range(20):
            session.execute("1 + 1")
        for _ in range(max(200, args.runs) // 10):
            floor_trips += [ms / 1000 for ms in floor(10)]
            for _ in range(10):
                start = time.perf_counter()
                session.execute("1 + 1")
                compose_trips.append(time.perf_counter() - start)
    rows.append(("execute round trip, raw ZMQ floor (local)", floor_trips))
    rows.append(("execute round trip, compose gateway", compose_trips))

    print(f"\n{'measurement':44} {'n':>4} {'p50 s':>8} {'p99 s':>8} {'mean s':>8}")
    for name, samples in rows:
        print(
            f"{name:44} {len(samples):>4} {percentile(samples, 50):>8.4f} "
            f"{percentile(samples, 99):>8.4f} {statistics.fmean(samples):>8.4f}"
        )
    start_p50 = percentile(rows[0][1], 50)
    ratio = percentile(compose_trips, 50) / percentile(floor_trips, 50)
    print(
        f"\ntargets: cold start p50 <= 0.7 s: {'met' if start_p50 <= 0.7 else 'NOT met'} "
        f"({start_p50:.3f} s); round trip p50 <= 1.3x raw ZMQ: "
        f"{'met' if ratio <= 1.3 else 'NOT met'} ({ratio:.2f}x)"
    )


if __name__ == "__main__":
    main()
