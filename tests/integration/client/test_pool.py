"""KernelSessionPool against a real gateway."""

from __future__ import annotations

import threading

import pytest
import requests

from jupyter_kernel_client import KernelDiedError, KernelSessionPool, PoolTimeoutError
from testkit.gateway import Gateway


def test_acquire_release_reuse_and_limits(gateway: Gateway) -> None:
    with KernelSessionPool(
        gateway.http,
        gateway.ws,
        "python3",
        size=1,
        max_size=2,
        reuse=True,  # the released kernel, and its state, is handed out again
        health_check_interval=None,
    ) as pool:
        assert pool.stats == {"idle": 1, "in_use": 0, "total": 1, "shutting_down": 0}
        first = pool.acquire()
        first.execute("marker = 'first'")
        second = pool.acquire()  # grows to max_size
        assert second.kernel_id != first.kernel_id
        with pytest.raises(PoolTimeoutError):
            pool.acquire(timeout=0.5)
        pool.release(first)
        again = pool.acquire(timeout=5)
        assert again is first and str(again.execute("marker")) == "'first'"
        pool.release(again)
        pool.release(second)
        with pytest.raises(ValueError):
            pool.release(second)
        assert pool.stats["in_use"] == 0


def test_waiting_acquire_gets_the_released_kernel(gateway: Gateway) -> None:
    with KernelSessionPool(
        gateway.http, gateway.ws, size=1, reuse=True, health_check_interval=None
    ) as pool:
        held = pool.acquire()
        threading.Timer(0.5, pool.release, (held,)).start()
        assert pool.acquire(timeout=30) is held


def test_dead_idle_kernel_is_replaced_by_the_health_check(gateway: Gateway) -> None:
    # reuse=True: the kernel seen in the session goes back to the idle ones, to be killed there.
    with KernelSessionPool(
        gateway.http, gateway.ws, size=2, reuse=True, health_check_interval=None
    ) as pool:
        with pool.session() as s:
            victim = s.kernel_id
        requests.delete(f"{gateway.http}/api/kernels/{victim}", timeout=30).raise_for_status()
        assert pool.check_health() == 1
        assert pool.stats == {"idle": 2, "in_use": 0, "total": 2, "shutting_down": 0}
        with pool.session() as a, pool.session() as b:
            assert victim not in (a.kernel_id, b.kernel_id)
            assert str(a.execute("1 + 1")) == "2" and str(b.execute("2 + 2")) == "4"


@pytest.mark.parametrize("reuse", [False, True])
def test_kernel_dying_in_use_is_discarded_and_replaced(gateway: Gateway, reuse: bool) -> None:
    with KernelSessionPool(
        gateway.http, gateway.ws, size=1, reuse=reuse, health_check_interval=None
    ) as pool:
        with pytest.raises(KernelDiedError), pool.session() as s:
            dead = s.kernel_id
            s.execute("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", timeout=60)
        with pool.session() as fresh:
            assert fresh.kernel_id != dead
            assert str(fresh.execute("3 * 3")) == "9"


def test_close_shuts_down_every_kernel_idle_or_in_use(gateway: Gateway) -> None:
    # reuse=True: a released kernel stays idle, so close finds one idle and one in use.
    pool = KernelSessionPool(
        gateway.http, gateway.ws, size=2, reuse=True, health_check_interval=None
    ).start()
    in_use, idle = pool.acquire(), pool.acquire()
    pool.release(idle)
    assert pool.stats == {"idle": 1, "in_use": 1, "total": 2, "shutting_down": 0}
    pool.close()
    assert {in_use.kernel_id, idle.kernel_id}.isdisjoint(k["id"] for k in gateway.kernels())
    assert in_use.closed and idle.closed
