"""A pool of pre-started kernels: acquire one in microseconds instead of starting one."""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any

from ._base import Instrumentation
from ._exceptions import KernelClientError, KernelDiedError, PoolTimeoutError, SessionStateError
from ._session import GatewayKernelSession

logger = logging.getLogger("jupyter_kernel_client")


class KernelSessionPool:
    """Keeps ``size`` idle kernels ready and grows on demand up to ``max_size``.

    Idle kernels are health-checked every ``health_check_interval`` seconds; dead ones, and
    kernels released with ``discard=True`` or found closed, are shut down and replaced.
    ``close()`` shuts every kernel down, in use or not.  ``session_class`` lets the pool hand out
    a subclass; ``metrics=KernelMetrics.for_registry(registry)`` instruments the pool's
    sessions and its acquire times.
    """

    def __init__(
        self,
        gateway_http: str,
        gateway_ws: str,
        kernel_name: str = "python3",
        *,
        size: int = 2,
        max_size: int | None = None,
        launch_env: dict[str, str] | None = None,
        startup_timeout: float = 30,
        max_retries: int = 3,
        retry_delay: float = 1.0,
        health_check_interval: float | None = 30.0,
        session_class: type[GatewayKernelSession] = GatewayKernelSession,
        **session_kwargs: Any,
    ) -> None:
        max_size = size if max_size is None else max_size
        if size < 0 or max_size < 1 or size > max_size:
            raise ValueError(
                f"need 0 <= size <= max_size and max_size >= 1 (got {size}, {max_size})"
            )
        if health_check_interval is not None and health_check_interval <= 0:
            raise ValueError("health_check_interval must be positive or None")
        self.size = size
        self.max_size = max_size
        self.health_check_interval = health_check_interval
        self._new_args = (
            gateway_http,
            gateway_ws,
            kernel_name,
            launch_env,
            startup_timeout,
            max_retries,
            retry_delay,
        )
        self._session_class = session_class
        self._session_kwargs = session_kwargs
        self._metrics: Instrumentation | None = session_kwargs.get("metrics")
        # Fail on bad arguments now, not in a background thread later.
        session_class(*self._new_args, **session_kwargs).shutdown()
        self._cond = threading.Condition()
        self._idle: collections.deque[GatewayKernelSession] = collections.deque()
        self._in_use: set[GatewayKernelSession] = set()
        self._total = 0  # idle + in use + being started
        self._state = "new"
        self._stop = threading.Event()
        self._health_thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> KernelSessionPool:
        """Start ``size`` kernels (in parallel) and the health checker."""
        with self._cond:
            if self._state != "new":
                raise SessionStateError(f"pool is {self._state}; create a new one")
            self._state = "open"
            self._total = self.size
        with ThreadPoolExecutor(max_workers=max(1, self.size)) as executor:
            futures = [executor.submit(self._new_session) for _ in range(self.size)]
        failures = [f.exception() for f in futures if f.exception() is not None]
        with self._cond:
            self._idle.extend(f.result() for f in futures if f.exception() is None)
        if failures:
            self.close()
            raise failures[0]  # type: ignore[misc]
        if self.health_check_interval is not None:
            self._health_thread = threading.Thread(
                target=self._health_loop, name="kernel-pool-health", daemon=True
            )
            self._health_thread.start()
        return self

    def close(self) -> None:
        """Shut down every kernel of the pool, idle or in use."""
        with self._cond:
            if self._state == "closed":
                return
            self._state = "closed"
            sessions = [*self._idle, *self._in_use]
            self._idle.clear()
            self._in_use.clear()
            self._cond.notify_all()
        self._stop.set()
        if sessions:
            with ThreadPoolExecutor(max_workers=min(8, len(sessions))) as executor:
                executor.map(_shutdown_quietly, sessions)
        if self._health_thread is not None:
            self._health_thread.join(timeout=5)

    def __enter__(self) -> KernelSessionPool:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- leasing --------------------------------------------------------------------------

    def acquire(self, timeout: float | None = None) -> GatewayKernelSession:
        """Take a kernel; start one if none is idle and the pool may grow; else wait."""
        started = time.monotonic()
        session = self._acquire(timeout)
        if self._metrics is not None:
            self._metrics.acquired(self._new_args[2], time.monotonic() - started)
        return session

    def _acquire(self, timeout: float | None) -> GatewayKernelSession:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._state != "open":
                    raise SessionStateError(f"pool is {self._state}")
                while self._idle:
                    session = self._idle.popleft()
                    if session.closed:
                        self._total -= 1
                        continue
                    self._in_use.add(session)
                    return session
                if self._total < self.max_size:
                    self._total += 1
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise PoolTimeoutError(
                        f"all {self.max_size} kernels of the pool stayed busy for {timeout:g} s"
                    )
                self._cond.wait(remaining)
        try:
            session = self._new_session()
        except BaseException:
            with self._cond:
                self._total -= 1
                self._cond.notify()
            raise
        with self._cond:
            if self._state != "open":
                self._total -= 1
                _shutdown_quietly(session)
                raise SessionStateError(f"pool is {self._state}")
            self._in_use.add(session)
        return session

    def release(self, session: GatewayKernelSession, *, discard: bool = False) -> None:
        """Give a kernel back; ``discard=True`` (or a dead kernel) replaces it with a new one."""
        with self._cond:
            if session not in self._in_use:
                raise ValueError("this session was not acquired from this pool")
            self._in_use.remove(session)
            if not discard and not session.closed and self._state == "open":
                self._idle.append(session)
                self._cond.notify()
                return
            self._total -= 1
            self._cond.notify()
        _shutdown_quietly(session)
        self._replenish()

    @contextlib.contextmanager
    def session(self, timeout: float | None = None) -> Iterator[GatewayKernelSession]:
        """``with pool.session() as s:`` — acquire, and release (discarding a dead kernel)."""
        session = self.acquire(timeout)
        discard = False
        try:
            yield session
        except KernelDiedError:
            discard = True
            raise
        finally:
            self.release(session, discard=discard)

    @property
    def stats(self) -> dict[str, int]:
        """Counts of idle, in-use and all kernels (including ones being started)."""
        with self._cond:
            return {"idle": len(self._idle), "in_use": len(self._in_use), "total": self._total}

    # --- health -------------------------------------------------------------------------------

    def check_health(self) -> int:
        """Check each idle kernel once; replace the dead ones.  Returns how many were replaced."""
        with self._cond:
            candidates = list(self._idle)
        replaced = 0
        for session in candidates:
            with self._cond:
                if session not in self._idle:
                    continue  # acquired meanwhile
                self._idle.remove(session)
                self._in_use.add(session)
            try:
                healthy = session.is_alive()
            except KernelClientError:
                healthy = False
            if not healthy:
                logger.warning("pooled kernel %s is dead; replacing it", session.kernel_id)
                replaced += 1
            self.release(session, discard=not healthy)
        return replaced

    def _health_loop(self) -> None:
        assert self.health_check_interval is not None
        while not self._stop.wait(self.health_check_interval):
            try:
                self.check_health()
            except Exception:
                # The checker must outlive any one failure (gateway briefly down, …).
                logger.exception("kernel pool health check failed")

    def _replenish(self) -> None:
        """Start kernels until ``size`` are there again (never past ``max_size``)."""
        while True:
            with self._cond:
                if self._state != "open" or self._total >= self.size:
                    return
                self._total += 1
            try:
                session = self._new_session()
            except KernelClientError:
                logger.exception("could not start a replacement kernel")
                with self._cond:
                    self._total -= 1
                return
            with self._cond:
                if self._state != "open":
                    self._total -= 1
                    _shutdown_quietly(session)
                    return
                self._idle.append(session)
                self._cond.notify()

    def _new_session(self) -> GatewayKernelSession:
        return self._session_class(*self._new_args, **self._session_kwargs).start()


def _shutdown_quietly(session: GatewayKernelSession) -> None:
    try:
        session.shutdown()
    except KernelClientError:
        logger.warning("could not shut down pooled kernel %s", session.kernel_id, exc_info=True)
