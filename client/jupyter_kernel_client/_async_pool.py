"""The async pool: :class:`KernelSessionPool`'s behaviour with ``await`` (same books)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from types import TracebackType

from ._async_session import AsyncGatewayKernelSession
from ._exceptions import KernelClientError, KernelDiedError
from ._pool import PoolBase, PoolState

logger = logging.getLogger("jupyter_kernel_client")


class AsyncKernelSessionPool(PoolBase[AsyncGatewayKernelSession]):
    """Keeps ``size`` idle kernels ready and grows on demand up to ``max_size``: the behaviour
    of :class:`KernelSessionPool`, the arguments of :class:`PoolBase`.

    ``async with AsyncKernelSessionPool(config, size=2) as pool, pool.session() as s:``
    """

    _session_class = AsyncGatewayKernelSession

    def _init_io(self) -> None:
        self._cond = asyncio.Condition()
        self._health_task: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> AsyncKernelSessionPool:
        """Start ``size`` kernels (concurrently) and the health checker."""
        async with self._cond:
            self._open()
        results = await asyncio.gather(
            *(self._start_one() for _ in range(self.size)), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        async with self._cond:
            self._idle.extend(r for r in results if isinstance(r, AsyncGatewayKernelSession))
        if failures:
            await self.close()
            raise failures[0]
        if self.health_check_interval is not None:
            self._health_task = asyncio.get_running_loop().create_task(self._health_loop())
        return self

    async def close(self) -> None:
        """Shut down every kernel of the pool, idle or in use."""
        async with self._cond:
            if self._state is PoolState.CLOSED:
                return
            sessions = self._close_books()
            self._cond.notify_all()
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        await asyncio.gather(*(_shutdown_quietly(s) for s in sessions))

    async def __aenter__(self) -> AsyncKernelSessionPool:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- leasing --------------------------------------------------------------------------

    async def acquire(self, timeout: float | None = None) -> AsyncGatewayKernelSession:
        """Take a kernel; start one if none is idle and the pool may grow; else wait."""
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        async with self._cond:
            while (lease := self._lease(deadline)) is False:
                remaining = None if deadline is None else deadline - time.monotonic()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._cond.wait(), remaining)
        if not isinstance(lease, bool):
            return self._acquired(lease, started)
        try:
            session = await self._start_one()
        except BaseException:
            async with self._cond:
                self._unreserve()
                self._cond.notify()
            raise
        async with self._cond:
            kept = self._keep(session, in_use=True)
        if not kept:
            await _shutdown_quietly(session)
            self._check_open()
        return self._acquired(session, started)

    async def release(self, session: AsyncGatewayKernelSession, *, discard: bool = False) -> None:
        """Give a kernel back; ``discard=True`` (or a dead kernel) replaces it with a new one."""
        async with self._cond:
            kept = self._give_back(session, discard)
            self._cond.notify()
        if not kept:
            await _shutdown_quietly(session)
            await self._replenish()

    @contextlib.asynccontextmanager
    async def session(
        self, timeout: float | None = None
    ) -> AsyncIterator[AsyncGatewayKernelSession]:
        """``async with pool.session() as s:`` — acquire, and release (discarding a dead kernel)."""
        session = await self.acquire(timeout)
        discard = False
        try:
            yield session
        except KernelDiedError:
            discard = True
            raise
        finally:
            await self.release(session, discard=discard)

    # --- health -------------------------------------------------------------------------------

    async def check_health(self) -> int:
        """Check each idle kernel once; replace the dead ones.  Returns how many were replaced."""
        replaced = 0
        for session in list(self._idle):
            async with self._cond:
                if not self._lease_for_check(session):
                    continue
            try:
                healthy = await session.is_alive()
            except KernelClientError:
                healthy = False
            if not healthy:
                logger.warning("pooled kernel %s is dead; replacing it", session.kernel_id)
                replaced += 1
            await self.release(session, discard=not healthy)
        return replaced

    async def _health_loop(self) -> None:
        assert self.health_check_interval is not None
        while True:
            await asyncio.sleep(self.health_check_interval)
            try:
                await self.check_health()
            except Exception:
                # The checker must outlive any one failure (gateway briefly down, …).
                logger.exception("kernel pool health check failed")

    async def _replenish(self) -> None:
        """Start kernels until ``size`` are there again (never past ``max_size``)."""
        while True:
            async with self._cond:
                if not self._needs_replacement():
                    return
            try:
                session = await self._start_one()
            except KernelClientError:
                logger.exception("could not start a replacement kernel")
                async with self._cond:
                    self._unreserve()
                return
            async with self._cond:
                kept = self._keep(session, in_use=False)
                self._cond.notify()
            if not kept:
                await _shutdown_quietly(session)
                return

    async def _start_one(self) -> AsyncGatewayKernelSession:
        return await self._new_session().start()


async def _shutdown_quietly(session: AsyncGatewayKernelSession) -> None:
    try:
        await session.shutdown()
    except KernelClientError:
        logger.warning("could not shut down pooled kernel %s", session.kernel_id, exc_info=True)
