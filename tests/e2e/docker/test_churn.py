"""Churn: 200 sessions started, used and shut down, 20 at a time, against the compose stack,
leave nothing behind: no kernel container or network, no network on the egress container, no
veth on the host nor iptables rule of a removed network, and no file descriptor in the gateway;
its memory grows by less than 50 MiB.  The pool's kernels are served and replaced along the
way, so both warm and cold starts churn.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from jupyter_kernel_client import GatewayKernelSession

from .conftest import POOL, Stack, docker

SESSIONS = 200
AT_ONCE = 20
RSS_GROWTH = 50 * 1024**2
BRIDGE = re.compile(r"\bbr-[0-9a-f]{12}\b")

pytestmark = pytest.mark.timeout(1200)


def gateway_processes(stack: Stack) -> list[int]:
    """Host pids of the gateway container's long-lived processes: its init and the gateway
    (launchers and health checks come and go)."""
    container = stack.container("gateway")
    init = int(docker("inspect", "-f", "{{.State.Pid}}", container))
    top = [line.split(None, 1) for line in docker("top", container, "-eo", "pid,args").splitlines()]
    gateway = [int(pid) for pid, args in top[1:] if int(pid) != init and "sandbox-gateway " in args]
    assert len(gateway) == 1, top
    return [init, *gateway]


def footprint(stack: Stack) -> dict[str, int]:
    """What a session could leave behind, counted."""
    kernel_containers = docker(
        "ps", "-aq", "--filter", "label=component=kernel", "--filter",
        f"label={stack.deployment_label}",
    ).split()  # fmt: skip
    egress = json.loads(docker("inspect", stack.container("egress")))[0]
    veths = subprocess.run(
        ["ip", "-o", "link", "show", "type", "veth"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    rules = subprocess.run(
        ["iptables-save"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    bridges = {"br-" + n[:12] for n in docker("network", "ls", "-q", "--no-trunc").split()}
    pids = gateway_processes(stack)
    return {
        "kernel containers": len(kernel_containers),
        "kernel networks": len(stack.kernel_networks()),
        "egress container's networks": len(egress["NetworkSettings"]["Networks"]),
        "host veths": len(veths),
        # Docker's rules for a bridge that no longer exists. Not the whole count: the local
        # cluster's NetworkPolicy enforcer, on this host too, changes its own rules meanwhile.
        "host iptables rules of removed networks": sum(
            1 for rule in rules if (m := BRIDGE.search(rule)) and m.group(0) not in bridges
        ),
        "gateway file descriptors": sum(
            len(list(Path(f"/proc/{pid}/fd").iterdir())) for pid in pids
        ),
    }


def gateway_rss(stack: Stack) -> int:
    total = 0
    for pid in gateway_processes(stack):
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        total += next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
    return total


def quiet(stack: Stack, timeout: float = 120) -> dict[str, int]:
    """The footprint with the pool full and nothing else left of earlier sessions: the pool's
    containers and networks alone, and two readings 2 s apart alike."""
    deadline = time.monotonic() + timeout
    last: dict[str, int] = {}
    while True:
        stack.wait_pools_ready()
        now = footprint(stack)
        pool_only = now["kernel containers"] == now["kernel networks"] == sum(POOL.values())
        if (pool_only and now == last) or time.monotonic() > deadline:
            return now
        last = now
        time.sleep(2)


def settled(stack: Stack, baseline: dict[str, int], timeout: float = 180) -> dict[str, int]:
    """The footprint once it is back at ``baseline`` (the pool refilled, the last containers and
    networks removed), or as it stands after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        stack.wait_pools_ready()
        now = footprint(stack)
        if now == baseline or time.monotonic() > deadline:
            return now
        time.sleep(2)


def use_once(stack: Stack, n: int) -> None:
    # Twenty cold starts at once on a small machine can take longer than Enterprise Gateway's
    # default 30 s launch timeout; this test is about what they leave behind, not their speed.
    with GatewayKernelSession(
        stack.gateway_http,
        stack.gateway_ws,
        "python3",
        {"KERNEL_LAUNCH_TIMEOUT": "120"},
        gateway_token=stack.gateway_token,
        startup_timeout=150,
    ) as kernel:
        assert str(kernel.execute(f"{n} + 1")) == str(n + 1)


def test_churn_of_200_sessions_leaves_nothing_behind(stack: Stack) -> None:
    # A first round, so that what the gateway creates once (its connections to the engine,
    # imports, caches) is in the baseline.
    with ThreadPoolExecutor(AT_ONCE) as workers:
        list(workers.map(lambda n: use_once(stack, n), range(AT_ONCE)))
    baseline = quiet(stack)
    rss_before = gateway_rss(stack)
    warm_before = stack.metric("sandbox_kernel_starts_total", kernelspec="python3", source="warm")
    cold_before = stack.metric("sandbox_kernel_starts_total", kernelspec="python3", source="cold")

    with ThreadPoolExecutor(AT_ONCE) as workers:
        list(workers.map(lambda n: use_once(stack, n), range(SESSIONS)))

    after = settled(stack, baseline)
    assert after == baseline
    grown = gateway_rss(stack) - rss_before
    assert grown < RSS_GROWTH, f"the gateway's memory grew by {grown / 1024**2:.1f} MiB"
    warm = stack.metric("sandbox_kernel_starts_total", kernelspec="python3", source="warm")
    cold = stack.metric("sandbox_kernel_starts_total", kernelspec="python3", source="cold")
    assert warm - warm_before + cold - cold_before >= SESSIONS  # a failed attempt counts too
    assert warm > warm_before and cold > cold_before  # both kinds of start churned
