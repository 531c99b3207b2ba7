"""The async pool: :class:`KernelSessionPool`'s behaviour with ``await`` (same books)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from types import TracebackType
from typing import Any

from ._async_session import AsyncGatewayKernelSession
from ._exceptions import KernelClientError, KernelDiedError
from ._pool import PoolBase, PoolState

logger = logging.getLogger("jupyter_kernel_client")


class AsyncKernelSessionPool(PoolBase[AsyncGatewayKernelSession]):
    """Keeps ``size`` idle kernels ready and grows on demand up to ``max_size``; by default a
    fresh kernel for every acquire, with ``reuse=True`` kernels handed out again, state and
    all: the behaviour of :class:`KernelSessionPool`, the arguments of :class:`PoolBase`.

    Released kernels are shut down, and replacements started, by background tasks.
    ``async with AsyncKernelSessionPool(config, size=2) as pool, pool.session() as s:``
    """

    _session_class = AsyncGatewayKernelSession

    def _init_io(self) -> None:
        self._cond = asyncio.Condition()
        self._health_task: asyncio.Task[None] | None = None
        self._jobs: set[asyncio.Task[None]] = set()  # referenced until done, awaited by close

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
            self._idle.extend(r for r in results if not isinstance(r, BaseException))
        if failures:
            await self.close()
            raise failures[0]
        if self.health_check_interval is not None:
            self._health_task = asyncio.get_running_loop().create_task(self._health_loop())
        return self

    async def close(self) -> None:
        """Shut down every kernel of the pool, idle or in use, and wait for the shutdowns and
        starts still running in the background."""
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
        # No job is submitted once the pool is closed; a start still running sees the pool
        # closed when it ends, and shuts its kernel down.
        while self._jobs:
            await asyncio.gather(*self._jobs, return_exceptions=True)  # jobs log their own

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
        """Give a kernel back, without waiting for anything; see
        :meth:`KernelSessionPool.release`."""
        async with self._cond:
            if self._give_back(session, keep=self._release_keeps(discard)):
                self._submit(self._retire, session)
                if self._needs_replacement():  # room beside the shutdown (max_size > size)
                    self._submit(self._start_replacement)
            self._cond.notify()

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
        """Check each idle kernel once; replace the dead ones, and start any kernel the pool
        lacks to have ``size``.  Returns how many were dead; waits for their replacements."""
        dead: list[asyncio.Task[None]] = []
        for session in list(self._idle):
            async with self._cond:
                if not self._lease_for_check(session):
                    continue
            try:
                healthy = await session.is_alive()
            except KernelClientError:
                healthy = False
            async with self._cond:
                if self._give_back(session, keep=healthy):
                    logger.warning("pooled kernel %s is dead; replacing it", session.kernel_id)
                    dead.append(self._submit(self._retire, session))
                self._cond.notify()
        # Shielded: cancelling the checker (close does) must not cancel a shutdown or a start.
        for job in dead:
            await asyncio.shield(job)
        async with self._cond:
            top_up = self._submit(self._replenish) if self._state is PoolState.OPEN else None
        if top_up is not None:
            await asyncio.shield(top_up)
        return len(dead)

    async def _health_loop(self) -> None:
        assert self.health_check_interval is not None
        while True:
            await asyncio.sleep(self.health_check_interval)
            try:
                await self.check_health()
            except Exception:
                # The checker must outlive any one failure (gateway briefly down, …).
                logger.exception("kernel pool health check failed")

    # --- background jobs --------------------------------------------------------------------

    def _submit(
        self, job: Callable[..., Coroutine[Any, Any, None]], *args: Any
    ) -> asyncio.Task[None]:
        """Run ``job`` as a task of the pool (call with the lock held, while the pool is open:
        close waits for every job submitted before it)."""
        assert self._state is PoolState.OPEN
        task = asyncio.get_running_loop().create_task(job(*args))
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)
        return task

    async def _retire(self, session: AsyncGatewayKernelSession) -> None:
        """Shut a released kernel down, then start what the pool lacks."""
        try:
            await _shutdown_quietly(session)
        finally:
            async with self._cond:
                self._shut_down()
                self._cond.notify_all()  # a slot of max_size is free
        await self._replenish()

    async def _start_replacement(self) -> None:
        """Start the kernel :meth:`_needs_replacement` reserved, then any more ``size`` needs."""
        if await self._start_reserved():
            await self._replenish()

    async def _replenish(self) -> None:
        """Start kernels until ``size`` are there again (never past ``max_size``)."""
        while True:
            async with self._cond:
                if not self._needs_replacement():
                    return
            if not await self._start_reserved():
                return

    async def _start_reserved(self) -> bool:
        """Start one reserved kernel for the idle ones; ``False`` if that failed or the pool
        closed meanwhile (a failed start is logged: the next health check tries again)."""
        try:
            session = await self._start_one()
        except BaseException as exc:
            async with self._cond:
                self._unreserve()
                self._cond.notify_all()
            if not isinstance(exc, Exception):
                raise  # cancelled
            logger.exception("could not start a replacement kernel")
            return False
        async with self._cond:
            kept = self._keep(session, in_use=False)
            self._cond.notify()
        if not kept:
            await _shutdown_quietly(session)
        return kept

    async def _start_one(self) -> AsyncGatewayKernelSession:
        return await self._new_session().start()


async def _shutdown_quietly(session: AsyncGatewayKernelSession) -> None:
    try:
        await session.shutdown()
    except Exception:  # a cleanup, often in the background: logged, never raised
        logger.warning("could not shut down pooled kernel %s", session.kernel_id, exc_info=True)
