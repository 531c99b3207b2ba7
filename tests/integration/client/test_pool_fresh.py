"""Both pools against a real gateway: by default no state passes from one acquire to the next.

The test gateway runs kernels as local processes, so a file one kernel writes in /tmp is seen by
every other kernel on the host: the state checked here is the kernel process's own (variables,
imported modules, environment, threads).  Files are the container's: on the Docker stack a fresh
kernel is a fresh container.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from jupyter_kernel_client import (
    AsyncKernelSessionPool,
    GatewayConfig,
    KernelDiedError,
    KernelSessionPool,
    PoolTimeoutError,
)
from testkit.gateway import Gateway

LEAVE_STATE = """
import os, sys, threading, time, types
secret = "caller 1"
sys.modules["left_behind"] = types.ModuleType("left_behind")
os.environ["LEFT_BEHIND"] = "caller 1"
threading.Thread(target=time.sleep, args=(3600,), name="left-behind", daemon=True).start()
"""

PROBE = """
import json, os, sys, threading
print(json.dumps({
    "pid": os.getpid(),
    "left": sorted(name for name, found in {
        "variable": "secret" in globals(),
        "module": "left_behind" in sys.modules,
        "environment": "LEFT_BEHIND" in os.environ,
        "thread": any(t.name == "left-behind" for t in threading.enumerate()),
    }.items() if found),
}))
"""
EVERYTHING = ["environment", "module", "thread", "variable"]

# The kernel takes seconds to exit once asked to (the gateway kills it after its grace time).
SLOW_EXIT = "import atexit, time; atexit.register(time.sleep, 30)"
KILL = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
WAIT = 90.0
MODES = pytest.mark.parametrize("options", [{}, {"reuse": True}], ids=["default", "reuse"])


def probe(result: Any) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(str(result.stdout))
    return value


def on_gateway(gateway: Gateway, kernel_id: str | None) -> bool:
    response = requests.get(f"{gateway.http}/api/kernels/{kernel_id}", timeout=30)
    return response.status_code == 200


def kernel_ids(gateway: Gateway) -> set[str]:
    return {str(k["id"]) for k in gateway.kernels()}


def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"not within {WAIT} s: {what}"
        time.sleep(0.1)


async def eventually_async(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"not within {WAIT} s: {what}"
        await asyncio.sleep(0.1)


def ready(pool: KernelSessionPool | AsyncKernelSessionPool, idle: int) -> Callable[[], bool]:
    return lambda: pool.stats == {"idle": idle, "in_use": 0, "total": idle, "shutting_down": 0}


# --- sync ---------------------------------------------------------------------------------


def test_by_default_acquire_two_sees_nothing_of_acquire_one(gateway: Gateway) -> None:
    with KernelSessionPool(gateway.http, gateway.ws, size=1, health_check_interval=None) as pool:
        with pool.session() as first:
            first.execute(LEAVE_STATE).raise_for_error()
            assert probe(first.execute(PROBE))["left"] == EVERYTHING
            before = probe(first.execute(PROBE))["pid"]
        with pool.session(timeout=WAIT) as second:
            seen = probe(second.execute(PROBE))
            assert second.kernel_id != first.kernel_id
        assert seen["left"] == [] and seen["pid"] != before
        eventually(lambda: not on_gateway(gateway, first.kernel_id), "the used kernel is gone")


def test_with_reuse_acquire_two_sees_what_acquire_one_left(gateway: Gateway) -> None:
    with KernelSessionPool(
        gateway.http, gateway.ws, size=1, reuse=True, health_check_interval=None
    ) as pool:
        with pool.session() as first:
            first.execute(LEAVE_STATE).raise_for_error()
        with pool.session(timeout=WAIT) as second:
            assert second is first
            assert probe(second.execute(PROBE))["left"] == EVERYTHING


def test_release_returns_before_the_kernel_is_gone(gateway: Gateway) -> None:
    with KernelSessionPool(gateway.http, gateway.ws, size=1, health_check_interval=None) as pool:
        session = pool.acquire()
        session.execute(SLOW_EXIT).raise_for_error()
        started = time.monotonic()
        pool.release(session)
        released_in = time.monotonic() - started
        assert on_gateway(gateway, session.kernel_id), "release waited for the shutdown"
        assert released_in < 2  # the shutdown takes seconds: the kernel exits that slowly
        eventually(lambda: not on_gateway(gateway, session.kernel_id), "the kernel is gone")
        eventually(ready(pool, 1), "a replacement is ready")


def test_the_pool_keeps_size_kernels_ready_after_releases(gateway: Gateway) -> None:
    before = kernel_ids(gateway)
    with KernelSessionPool(
        gateway.http, gateway.ws, size=2, max_size=3, health_check_interval=None
    ) as pool:
        used = [pool.acquire() for _ in range(3)]  # two pre-started, one started on demand
        for session in used:
            pool.release(session)
        eventually(ready(pool, 2), "two kernels ready again, the used ones shut down")
        used_ids = {s.kernel_id for s in used}
        ready_ids = kernel_ids(gateway) - before
        assert len(ready_ids) == 2 and not ready_ids & used_ids
        with pool.session() as a, pool.session() as b:
            assert {a.kernel_id, b.kernel_id} == ready_ids  # the ones started in advance
            assert str(a.execute("1 + 1")) == "2" and str(b.execute("2 + 2")) == "4"


def test_close_leaves_no_kernel_behind(gateway: Gateway) -> None:
    before = kernel_ids(gateway)
    pool = KernelSessionPool(
        gateway.http, gateway.ws, size=2, max_size=4, health_check_interval=None
    ).start()
    slow, quick, held = pool.acquire(), pool.acquire(), pool.acquire()
    slow.execute(SLOW_EXIT).raise_for_error()
    pool.release(slow)
    pool.release(quick)  # two shutdowns and a replacement's start run while the pool closes
    assert pool.stats == {"idle": 0, "in_use": 1, "total": 2, "shutting_down": 2}
    pool.close()
    assert kernel_ids(gateway) - before == set()
    assert slow.closed and quick.closed and held.closed


def test_max_size_bounds_acquires_and_a_waiter_gets_a_fresh_kernel(gateway: Gateway) -> None:
    with KernelSessionPool(
        gateway.http, gateway.ws, size=1, max_size=2, health_check_interval=None
    ) as pool:
        first, second = pool.acquire(), pool.acquire()
        first.execute(LEAVE_STATE).raise_for_error()
        with pytest.raises(PoolTimeoutError):
            pool.acquire(timeout=1)
        threading.Timer(0.5, pool.release, (first,)).start()
        third = pool.acquire(timeout=WAIT)
        assert third is not first and third.kernel_id not in (first.kernel_id, second.kernel_id)
        assert probe(third.execute(PROBE))["left"] == []
        assert pool.stats["in_use"] == 2
        pool.release(second)
        pool.release(third)


@MODES
def test_a_kernel_that_died_under_its_caller_is_not_handed_out(
    gateway: Gateway, options: dict[str, bool]
) -> None:
    with KernelSessionPool(
        gateway.http, gateway.ws, size=1, health_check_interval=None, **options
    ) as pool:
        session = pool.acquire()
        with pytest.raises(KernelDiedError):
            session.execute(KILL, timeout=60)
        pool.release(session)  # a plain release: the caller did not say discard
        with pool.session(timeout=WAIT) as fresh:
            assert fresh is not session and fresh.kernel_id != session.kernel_id
            assert str(fresh.execute("3 * 3")) == "9"


def test_release_of_a_kernel_deleted_behind_the_pool(gateway: Gateway) -> None:
    with KernelSessionPool(gateway.http, gateway.ws, size=1, health_check_interval=None) as pool:
        session = pool.acquire()
        requests.delete(f"{gateway.http}/api/kernels/{session.kernel_id}", timeout=30)
        pool.release(session)
        eventually(ready(pool, 1), "replaced")
        with pool.session() as fresh:
            assert str(fresh.execute("3 * 3")) == "9"


# --- async --------------------------------------------------------------------------------


async def test_async_default_is_fresh_and_reuse_carries_state(gateway: Gateway) -> None:
    config = GatewayConfig(gateway.http, gateway.ws)
    for options, expected in (({}, []), ({"reuse": True}, EVERYTHING)):
        async with AsyncKernelSessionPool(
            config, size=1, health_check_interval=None, **options
        ) as pool:
            async with pool.session() as first:
                (await first.execute(LEAVE_STATE)).raise_for_error()
            async with pool.session(timeout=WAIT) as second:
                assert (second is first) is bool(options)
                assert probe(await second.execute(PROBE))["left"] == expected, options


async def test_async_release_returns_before_the_kernel_is_gone(gateway: Gateway) -> None:
    config = GatewayConfig(gateway.http, gateway.ws)
    async with AsyncKernelSessionPool(config, size=1, health_check_interval=None) as pool:
        session = await pool.acquire()
        (await session.execute(SLOW_EXIT)).raise_for_error()
        await asyncio.wait_for(pool.release(session), 2)
        assert await asyncio.to_thread(on_gateway, gateway, session.kernel_id)
        assert not session.closed
        await eventually_async(ready(pool, 1), "shut down and replaced")
        assert session.closed
        assert not await asyncio.to_thread(on_gateway, gateway, session.kernel_id)


async def test_async_close_leaves_no_kernel_behind(gateway: Gateway) -> None:
    before = await asyncio.to_thread(kernel_ids, gateway)
    config = GatewayConfig(gateway.http, gateway.ws)
    pool = await AsyncKernelSessionPool(
        config, size=2, max_size=4, health_check_interval=None
    ).start()
    slow, quick, held = await pool.acquire(), await pool.acquire(), await pool.acquire()
    (await slow.execute(SLOW_EXIT)).raise_for_error()
    await pool.release(slow)
    await pool.release(quick)  # two shutdowns and a replacement's start run while it closes
    assert pool.stats == {"idle": 0, "in_use": 1, "total": 2, "shutting_down": 2}
    await pool.close()
    assert await asyncio.to_thread(kernel_ids, gateway) - before == set()
    assert slow.closed and quick.closed and held.closed


@MODES
async def test_async_kernel_that_died_under_its_caller_is_not_handed_out(
    gateway: Gateway, options: dict[str, bool]
) -> None:
    config = GatewayConfig(gateway.http, gateway.ws)
    async with AsyncKernelSessionPool(
        config, size=1, health_check_interval=None, **options
    ) as pool:
        session = await pool.acquire()
        with pytest.raises(KernelDiedError):
            await session.execute(KILL, timeout=60)
        await pool.release(session)
        async with pool.session(timeout=WAIT) as fresh:
            assert fresh is not session
            assert str(await fresh.execute("3 * 3")) == "9"
