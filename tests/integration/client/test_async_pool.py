"""AsyncKernelSessionPool against a real gateway: the sync pool's behaviour with ``await``."""

from __future__ import annotations

import asyncio

import pytest
import requests
from prometheus_client import CollectorRegistry

from jupyter_kernel_client import (
    AsyncGatewayKernelSession,
    AsyncKernelSessionPool,
    GatewayConfig,
    KernelDiedError,
    KernelMetrics,
    PoolState,
    PoolTimeoutError,
    SessionStateError,
)
from testkit.gateway import Gateway


async def test_acquire_release_reuse_and_limits(gateway: Gateway) -> None:
    config = GatewayConfig(gateway.http, gateway.ws)
    async with AsyncKernelSessionPool(
        config, size=1, max_size=2, reuse=True, health_check_interval=None
    ) as pool:
        assert pool.state is PoolState.OPEN
        assert pool.stats == {"idle": 1, "in_use": 0, "total": 1, "shutting_down": 0}
        first = await pool.acquire()
        await first.execute("marker = 'first'")
        second = await pool.acquire()  # grows to max_size
        assert second.kernel_id != first.kernel_id
        with pytest.raises(PoolTimeoutError):
            await pool.acquire(timeout=0.5)
        asyncio.get_running_loop().call_later(0.3, asyncio.ensure_future, pool.release(first))
        again = await pool.acquire(timeout=30)  # waits for the release
        assert again is first and str(await again.execute("marker")) == "'first'"
        await pool.release(again)
        await pool.release(second)
        with pytest.raises(ValueError):
            await pool.release(second)
        assert pool.stats == {"idle": 2, "in_use": 0, "total": 2, "shutting_down": 0}
    assert pool.state is PoolState.CLOSED
    assert first.closed and second.closed
    with pytest.raises(SessionStateError, match="closed"):
        await pool.acquire()


async def test_dead_kernels_are_replaced_idle_or_in_use(gateway: Gateway) -> None:
    # reuse=True: the kernel seen in the session goes back to the idle ones, to be killed there.
    pool = AsyncKernelSessionPool(
        gateway.http, gateway.ws, size=1, reuse=True, health_check_interval=None
    )
    async with pool:
        async with pool.session() as s:
            victim = s.kernel_id
        requests.delete(f"{gateway.http}/api/kernels/{victim}", timeout=30).raise_for_status()
        assert await pool.check_health() == 1
        assert pool.stats == {"idle": 1, "in_use": 0, "total": 1, "shutting_down": 0}
        with pytest.raises(KernelDiedError):
            async with pool.session() as s:
                assert s.kernel_id != victim
                dead = s.kernel_id
                code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
                await s.execute(code, timeout=60)
        async with pool.session() as fresh:
            assert fresh.kernel_id not in (victim, dead)
            assert str(await fresh.execute("3 * 3")) == "9"


async def test_factory_pool_with_metrics_and_close_of_kernels_in_use(gateway: Gateway) -> None:
    registry = CollectorRegistry()
    metrics = KernelMetrics.for_registry(registry)
    config = GatewayConfig(gateway.http, gateway.ws)
    pool = AsyncKernelSessionPool(
        factory=lambda: AsyncGatewayKernelSession(config, metrics=metrics),
        size=2,
        health_check_interval=0.2,
        metrics=metrics,
    )
    await pool.start()
    held = await pool.acquire()
    await asyncio.sleep(0.5)  # the health checker runs meanwhile, and leaves healthy kernels
    assert pool.stats == {"idle": 1, "in_use": 1, "total": 2, "shutting_down": 0}
    ids = {held.kernel_id, await _idle_id(pool)}
    await pool.close()
    assert held.closed
    assert ids.isdisjoint(k["id"] for k in gateway.kernels())
    acquired = registry.get_sample_value(
        "jupyter_kernel_pool_acquire_duration_seconds_count", {"kernel_name": "python3"}
    )
    assert acquired == 2
    active = registry.get_sample_value("jupyter_kernel_active_sessions", {"kernel_name": "python3"})
    assert active == 0


async def _idle_id(pool: AsyncKernelSessionPool) -> str | None:
    """The id of the pool's idle kernel, seen the way a user would: acquire and release it."""
    async with pool.session() as session:
        return session.kernel_id
