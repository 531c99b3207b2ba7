"""The pools' bookkeeping, on both faces, with sessions of a fake gateway (no network).

What a kernel holds is modelled as ``state``; shutdowns and starts can be held back by a gate,
to see what the pool does while they are still running.  The same behaviour against a real
gateway: tests/integration/client/test_pool_fresh.py.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from jupyter_kernel_client import (
    AsyncKernelSessionPool,
    KernelLimitError,
    KernelSessionPool,
    PoolTimeoutError,
)

WAIT = 10.0  # seconds a background job may take here, where every job is instant once let go


class FakeGateway:
    """The kernels that are running; gates that hold shutdowns and starts back when cleared."""

    def __init__(self) -> None:
        self.running: set[str] = set()
        self.most_running = 0
        self.starts = 0
        self.refuse_starts = 0  # this many next starts fail with KernelLimitError
        self.shutdowns_go = threading.Event()
        self.starts_go = threading.Event()
        self.shutdowns_go.set()
        self.starts_go.set()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def start(self) -> str:
        assert self.starts_go.wait(WAIT), "a start was held back for too long"
        with self._lock:
            if self.refuse_starts:
                self.refuse_starts -= 1
                raise KernelLimitError("kernel limit reached", status_code=403, scope="user")
            self.starts += 1
            kernel_id = f"k{next(self._ids)}"
            self.running.add(kernel_id)
            self.most_running = max(self.most_running, len(self.running))
            return kernel_id

    def stop(self, kernel_id: str) -> None:
        assert self.shutdowns_go.wait(WAIT), "a shutdown was held back for too long"
        with self._lock:
            self.running.discard(kernel_id)


class FakeSession:
    """What a pool uses of a session."""

    kernel_name = "python3"

    def __init__(self, gateway: FakeGateway) -> None:
        self.gateway = gateway
        self.kernel_id: str | None = None
        self.state: dict[str, Any] = {}  # what code run in the kernel left behind
        self.closed = False
        self._kernel_died = False

    def start(self) -> FakeSession:
        self.kernel_id = self.gateway.start()
        return self

    def shutdown(self) -> None:
        if not self.closed:
            self.gateway.stop(str(self.kernel_id))
            self.closed = True

    def is_alive(self) -> bool:
        return not self.closed and self.kernel_id in self.gateway.running


class AsyncFakeSession(FakeSession):
    async def start(self) -> AsyncFakeSession:  # type: ignore[override]
        self.kernel_id = await asyncio.to_thread(self.gateway.start)
        return self

    async def shutdown(self) -> None:  # type: ignore[override]
        if not self.closed:
            await asyncio.to_thread(self.gateway.stop, str(self.kernel_id))
            self.closed = True

    async def is_alive(self) -> bool:  # type: ignore[override]
        return super().is_alive()


def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"not within {WAIT} s: {what}"
        time.sleep(0.01)


async def eventually_async(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"not within {WAIT} s: {what}"
        await asyncio.sleep(0.01)


@pytest.fixture
def gw() -> FakeGateway:
    return FakeGateway()


def sync_pool(gw: FakeGateway, **kwargs: Any) -> KernelSessionPool:
    kwargs.setdefault("health_check_interval", None)
    return KernelSessionPool(factory=lambda: FakeSession(gw), **kwargs)  # type: ignore[arg-type,return-value]


def async_pool(gw: FakeGateway, **kwargs: Any) -> AsyncKernelSessionPool:
    kwargs.setdefault("health_check_interval", None)
    return AsyncKernelSessionPool(factory=lambda: AsyncFakeSession(gw), **kwargs)  # type: ignore[arg-type,return-value]


def ready(pool: KernelSessionPool | AsyncKernelSessionPool, idle: int) -> Callable[[], bool]:
    """The pool has ``idle`` kernels ready and nothing left to do in the background."""
    return lambda: pool.stats == {"idle": idle, "in_use": 0, "total": idle, "shutting_down": 0}


# --- sync ---------------------------------------------------------------------------------


def test_by_default_each_acquire_gets_a_fresh_kernel(gw: FakeGateway) -> None:
    with sync_pool(gw, size=1) as pool:
        assert pool.reuse is False
        first = pool.acquire()
        first.state["secret"] = "caller 1"  # type: ignore[attr-defined]
        pool.release(first)
        second = pool.acquire(timeout=WAIT)
        assert second is not first and second.kernel_id != first.kernel_id
        assert second.state == {}  # type: ignore[attr-defined]
        eventually(lambda: first.closed, "the released kernel is shut down")
        assert gw.running == {second.kernel_id}
        pool.release(second)
        eventually(ready(pool, 1), "a replacement is ready")
    assert gw.running == set()


def test_reuse_hands_the_same_kernel_and_its_state_out_again(gw: FakeGateway) -> None:
    with sync_pool(gw, size=1, reuse=True) as pool:
        first = pool.acquire()
        first.state["secret"] = "caller 1"  # type: ignore[attr-defined]
        pool.release(first)
        again = pool.acquire(timeout=WAIT)
        assert again is first and again.state == {"secret": "caller 1"}  # type: ignore[attr-defined]
        pool.release(again)
        assert gw.starts == 1 and ready(pool, 1)()


def test_release_returns_while_the_shutdown_runs(gw: FakeGateway) -> None:
    with sync_pool(gw, size=1) as pool:
        session = pool.acquire()
        gw.shutdowns_go.clear()
        started = time.monotonic()
        pool.release(session)
        assert time.monotonic() - started < 1
        assert pool.stats["shutting_down"] == 1 and session.kernel_id in gw.running
        gw.shutdowns_go.set()
        eventually(ready(pool, 1), "shut down and replaced")
        assert session.kernel_id not in gw.running and session.closed


def test_a_kernel_being_shut_down_counts_against_max_size(gw: FakeGateway) -> None:
    with sync_pool(gw, size=1, max_size=1) as pool:
        session = pool.acquire()
        gw.shutdowns_go.clear()
        pool.release(session)
        with pytest.raises(PoolTimeoutError):
            pool.acquire(timeout=0.3)  # no room for a second kernel beside the one going
        assert pool.stats == {"idle": 0, "in_use": 0, "total": 0, "shutting_down": 1}
        gw.shutdowns_go.set()
        fresh = pool.acquire(timeout=WAIT)  # the replacement, started once the shutdown ended
        assert fresh is not session
        pool.release(fresh)
    assert gw.most_running == 1


def test_with_room_the_replacement_starts_beside_the_shutdown(gw: FakeGateway) -> None:
    with sync_pool(gw, size=1, max_size=2) as pool:
        session = pool.acquire()
        gw.shutdowns_go.clear()
        pool.release(session)
        eventually(lambda: pool.stats["idle"] == 1, "a replacement while the shutdown runs")
        assert pool.stats["shutting_down"] == 1 and len(gw.running) == 2
        gw.shutdowns_go.set()
        eventually(ready(pool, 1), "the shutdown ended")


def test_the_pool_refills_to_size_and_no_further(gw: FakeGateway) -> None:
    with sync_pool(gw, size=2, max_size=4) as pool:
        held = [pool.acquire() for _ in range(4)]  # two pre-started, two on demand
        with pytest.raises(PoolTimeoutError):
            pool.acquire(timeout=0.2)
        for session in held:
            pool.release(session)
        eventually(ready(pool, 2), "two ready again")
        assert len(gw.running) == 2 and not {s.kernel_id for s in held} & gw.running
        assert gw.starts == 6


def test_a_waiting_acquire_gets_a_fresh_kernel_after_a_release(gw: FakeGateway) -> None:
    with sync_pool(gw, size=1) as pool:
        held = pool.acquire()
        threading.Timer(0.2, pool.release, (held,)).start()
        fresh = pool.acquire(timeout=WAIT)
        assert fresh is not held and fresh.kernel_id not in (None, held.kernel_id)


def test_close_waits_for_background_shutdowns_and_starts(gw: FakeGateway) -> None:
    pool = sync_pool(gw, size=1, max_size=2).start()
    session = pool.acquire()
    gw.shutdowns_go.clear()
    gw.starts_go.clear()
    pool.release(session)  # its shutdown and its replacement's start are both held back
    closing = threading.Thread(target=pool.close)
    closing.start()
    closing.join(timeout=0.3)
    assert closing.is_alive(), "close returned with a shutdown and a start still running"
    gw.shutdowns_go.set()
    gw.starts_go.set()
    closing.join(timeout=WAIT)
    assert not closing.is_alive()
    assert gw.running == set()  # the replacement that started during close was shut down too
    assert gw.starts == 2


def test_close_shuts_down_kernels_in_use_and_release_after_close_is_harmless(
    gw: FakeGateway,
) -> None:
    pool = sync_pool(gw, size=2).start()
    in_use = pool.acquire()
    pool.close()
    assert in_use.closed and gw.running == set()
    pool.release(in_use)  # the `with pool.session()` of a pool closed meanwhile
    assert gw.running == set()


@pytest.mark.parametrize("reuse", [False, True])
def test_a_kernel_that_died_is_not_handed_out_again(gw: FakeGateway, reuse: bool) -> None:
    with sync_pool(gw, size=1, reuse=reuse) as pool:
        session = pool.acquire()
        session._kernel_died = True  # what a request that raised KernelDiedError leaves
        pool.release(session)
        fresh = pool.acquire(timeout=WAIT)
        assert fresh is not session and fresh.kernel_id != session.kernel_id
        pool.release(fresh)
        closed_by_caller = pool.acquire(timeout=WAIT)
        closed_by_caller.shutdown()
        pool.release(closed_by_caller)
        assert pool.acquire(timeout=WAIT) is not closed_by_caller


def test_release_checks_what_it_is_given(gw: FakeGateway) -> None:
    with sync_pool(gw, size=1) as pool:
        with pytest.raises(ValueError, match="not acquired"):
            pool.release(FakeSession(gw))  # type: ignore[arg-type]
        session = pool.acquire()
        pool.release(session)
        with pytest.raises(ValueError, match="not acquired"):
            pool.release(session)
    with pytest.raises(TypeError, match="reuse"):
        sync_pool(gw, reuse="yes")


def test_health_check_replaces_dead_kernels_and_a_failed_replacement(gw: FakeGateway) -> None:
    with sync_pool(gw, size=2) as pool:
        victim = next(iter(gw.running))
        gw.stop(victim)  # killed behind the pool's back
        assert pool.check_health() == 1
        assert ready(pool, 2)() and victim not in gw.running and len(gw.running) == 2
        gw.refuse_starts = 1
        pool.release(pool.acquire())
        eventually(lambda: pool.stats["shutting_down"] == 0, "the shutdown ended")
        eventually(ready(pool, 1), "the refused replacement is given up")
        assert pool.check_health() == 0  # none dead, but one missing: started now
        assert ready(pool, 2)()


def test_the_health_checker_runs_in_the_background(gw: FakeGateway) -> None:
    with sync_pool(gw, size=1, health_check_interval=0.05) as pool:
        gw.stop(next(iter(gw.running)))
        eventually(lambda: len(gw.running) == 1 and ready(pool, 1)(), "the dead one replaced")


# --- async --------------------------------------------------------------------------------


async def test_async_default_gives_fresh_kernels_and_reuse_the_same(gw: FakeGateway) -> None:
    async with async_pool(gw, size=1) as pool:
        first = await pool.acquire()
        first.state["secret"] = "caller 1"  # type: ignore[attr-defined]
        await pool.release(first)
        second = await pool.acquire(timeout=WAIT)
        assert second is not first and second.state == {}  # type: ignore[attr-defined]
        await pool.release(second)
        await eventually_async(ready(pool, 1), "a replacement is ready")
        assert first.closed and second.closed
    async with async_pool(gw, size=1, reuse=True) as pool:
        first = await pool.acquire()
        first.state["secret"] = "caller 1"  # type: ignore[attr-defined]
        await pool.release(first)
        again = await pool.acquire(timeout=WAIT)
        assert again is first and again.state == {"secret": "caller 1"}  # type: ignore[attr-defined]
        await pool.release(again)
    assert gw.running == set()


async def test_async_release_returns_while_the_shutdown_runs(gw: FakeGateway) -> None:
    async with async_pool(gw, size=1, max_size=1) as pool:
        session = await pool.acquire()
        gw.shutdowns_go.clear()
        await asyncio.wait_for(pool.release(session), 1)
        assert pool.stats["shutting_down"] == 1 and session.kernel_id in gw.running
        with pytest.raises(PoolTimeoutError):
            await pool.acquire(timeout=0.3)
        gw.shutdowns_go.set()
        fresh = await pool.acquire(timeout=WAIT)
        assert fresh is not session and session.closed
        await pool.release(fresh)
    assert gw.most_running == 1 and gw.running == set()


async def test_async_close_waits_for_background_shutdowns_and_starts(gw: FakeGateway) -> None:
    pool = await async_pool(gw, size=1, max_size=2).start()
    session = await pool.acquire()
    gw.shutdowns_go.clear()
    gw.starts_go.clear()
    await pool.release(session)
    closing = asyncio.ensure_future(pool.close())
    await asyncio.sleep(0.3)
    assert not closing.done(), "close returned with a shutdown and a start still running"
    gw.shutdowns_go.set()
    gw.starts_go.set()
    await asyncio.wait_for(closing, WAIT)
    assert gw.running == set() and gw.starts == 2


async def test_async_health_check_replaces_the_dead_and_tops_up(gw: FakeGateway) -> None:
    async with async_pool(gw, size=2) as pool:
        victim = next(iter(gw.running))
        gw.stop(victim)
        assert await pool.check_health() == 1
        assert ready(pool, 2)() and victim not in gw.running
        gw.refuse_starts = 1
        await pool.release(await pool.acquire())
        await eventually_async(ready(pool, 1), "the refused replacement is given up")
        assert await pool.check_health() == 0
        assert ready(pool, 2)()


@pytest.mark.parametrize("reuse", [False, True])
async def test_async_kernel_that_died_is_not_handed_out_again(gw: FakeGateway, reuse: bool) -> None:
    async with async_pool(gw, size=1, reuse=reuse) as pool:
        session = await pool.acquire()
        session._kernel_died = True
        await pool.release(session)
        fresh = await pool.acquire(timeout=WAIT)
        assert fresh is not session
        await pool.release(fresh)
