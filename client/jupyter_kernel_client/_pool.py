"""Pools of pre-started kernels: acquire one in microseconds instead of starting one.

:class:`PoolBase` keeps the books (idle, in use, being started; the pool's state) for both
faces; :class:`KernelSessionPool` adds threads, the async pool (``_async_pool``) tasks.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Generic, TypeVar

from ._base import Instrumentation, SessionBase
from ._config import FileServerConfig, GatewayConfig, coerce_config
from ._exceptions import KernelClientError, KernelDiedError, PoolTimeoutError, SessionStateError
from ._session import GatewayKernelSession

logger = logging.getLogger("jupyter_kernel_client")

S = TypeVar("S", bound=SessionBase)


class PoolState(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class PoolBase(Generic[S]):
    """A pool's constructor and books, shared by both faces (whose methods hold its lock).

    ``size`` kernels are kept ready and the pool grows on demand up to ``max_size``.  The
    sessions come from a :class:`GatewayConfig` (``Pool(config, size=2)``), the seed's
    arguments (``Pool(http, ws, "python3", size=2, launch_env=...)``; further keywords are
    :class:`GatewayConfig` fields, validated here, once) or ``factory=`` (any callable returning
    a new, unstarted session).  ``files=`` and ``metrics=`` reach every session the pool makes;
    ``metrics`` also times acquisitions.
    """

    _session_class: type[S]
    """The face's session class, used unless ``session_class=`` names a subclass."""

    def __init__(
        self,
        gateway_http: str | GatewayConfig | None = None,
        gateway_ws: str | None = None,
        kernel_name: str | None = None,
        *,
        factory: Callable[[], S] | None = None,
        size: int = 2,
        max_size: int | None = None,
        health_check_interval: float | None = 30.0,
        files: FileServerConfig | None = None,
        metrics: Instrumentation | None = None,
        session_class: type[S] | None = None,
        **options: Any,
    ) -> None:
        max_size = size if max_size is None else max_size
        if size < 0 or max_size < 1 or size > max_size:
            raise ValueError(
                f"need 0 <= size <= max_size and max_size >= 1 (got {size}, {max_size})"
            )
        if health_check_interval is not None and health_check_interval <= 0:
            raise ValueError("health_check_interval must be positive or None")
        if factory is None:
            cls = session_class or self._session_class
            config = _pool_config(gateway_http, gateway_ws, kernel_name, options)
            factory = functools.partial(cls, config, files=files, metrics=metrics)
        elif gateway_http is not None or gateway_ws is not None or kernel_name is not None:
            raise TypeError("pass either factory= or the connection arguments, not both")
        elif options or files is not None or session_class is not None:
            raise TypeError("with factory=, the factory configures the sessions")
        elif not callable(factory):
            raise TypeError("factory must be callable")
        self.size = size
        self.max_size = max_size
        self.health_check_interval = health_check_interval
        self._new_session = factory
        self._metrics = metrics
        self._idle: collections.deque[S] = collections.deque()
        self._in_use: set[S] = set()
        self._total = 0  # idle + in use + being started
        self._state = PoolState.NEW
        self._init_io()

    def _init_io(self) -> None:
        """Set up the face's lock and helpers (called at the end of ``__init__``)."""
        raise NotImplementedError

    @property
    def state(self) -> PoolState:
        return self._state

    @property
    def stats(self) -> dict[str, int]:
        """Counts of idle, in-use and all kernels (including ones being started)."""
        return {"idle": len(self._idle), "in_use": len(self._in_use), "total": self._total}

    def _open(self) -> None:
        if self._state is not PoolState.NEW:
            raise SessionStateError(f"pool is {self._state.value}; create a new one")
        self._state = PoolState.OPEN
        self._total = self.size

    def _check_open(self) -> None:
        if self._state is not PoolState.OPEN:
            raise SessionStateError(f"pool is {self._state.value}")

    def _close_books(self) -> list[S]:
        """Mark the pool closed; every session it had, for the face to shut down."""
        self._state = PoolState.CLOSED
        sessions = [*self._idle, *self._in_use]
        self._idle.clear()
        self._in_use.clear()
        return sessions

    def _lease(self, deadline: float | None) -> S | bool:
        """One look at the books for ``acquire``: an idle session (now in use); ``True`` if
        the caller may start one (it is counted); ``False`` if it must wait for a release."""
        self._check_open()
        session = self._take_idle()
        if session is not None:
            return session
        if self._reserve():
            return True
        if deadline is not None and deadline <= time.monotonic():
            raise PoolTimeoutError(
                f"all {self.max_size} kernels of the pool stayed busy until the acquire timeout"
            )
        return False

    def _take_idle(self) -> S | None:
        """An idle session, now in use (closed ones are dropped on the way)."""
        while self._idle:
            session = self._idle.popleft()
            if session.closed:
                self._total -= 1
                continue
            self._in_use.add(session)
            return session
        return None

    def _reserve(self) -> bool:
        """Count a session about to be started, if the pool may grow."""
        if self._total >= self.max_size:
            return False
        self._total += 1
        return True

    def _unreserve(self) -> None:
        self._total -= 1

    def _keep(self, session: S, *, in_use: bool) -> bool:
        """File a freshly started session; ``False`` if the pool closed meanwhile."""
        if self._state is not PoolState.OPEN:
            self._total -= 1
            return False
        (self._in_use.add if in_use else self._idle.append)(session)
        return True

    def _give_back(self, session: S, discard: bool) -> bool:
        """Return a leased session; ``True`` if it went back to idle, ``False`` if the face
        must shut it down (and replenish)."""
        if session not in self._in_use:
            raise ValueError("this session was not acquired from this pool")
        self._in_use.remove(session)
        if not discard and not session.closed and self._state is PoolState.OPEN:
            self._idle.append(session)
            return True
        self._total -= 1
        return False

    def _lease_for_check(self, session: S) -> bool:
        """Move an idle session to in-use for a health check (``False``: acquired meanwhile)."""
        if session not in self._idle:
            return False
        self._idle.remove(session)
        self._in_use.add(session)
        return True

    def _needs_replacement(self) -> bool:
        """Reserve a replacement if the pool is below ``size``."""
        if self._state is not PoolState.OPEN or self._total >= self.size:
            return False
        self._total += 1
        return True

    def _acquired(self, session: S, started: float) -> S:
        if self._metrics is not None:
            self._metrics.acquired(session.kernel_name, time.monotonic() - started)
        return session


def _pool_config(
    source: str | GatewayConfig | None,
    gateway_ws: str | None,
    kernel_name: str | None,
    options: dict[str, Any],
) -> GatewayConfig:
    if source is None:
        raise TypeError("a pool needs a GatewayConfig, the gateway URLs or factory=")
    if "gateway_token" in options:
        options["token"] = options.pop("gateway_token")
    if not isinstance(source, GatewayConfig) and kernel_name is None:
        kernel_name = "python3"  # the seed pool's default
    return coerce_config(source, gateway_ws, kernel_name, **options)


class KernelSessionPool(PoolBase[GatewayKernelSession]):
    """Keeps ``size`` idle kernels ready and grows on demand up to ``max_size`` (the arguments
    are :class:`PoolBase`'s).

    Idle kernels are health-checked every ``health_check_interval`` seconds; dead ones, and
    kernels released with ``discard=True`` or found closed, are shut down and replaced.
    ``close()`` shuts every kernel down, in use or not.
    """

    _session_class = GatewayKernelSession

    def _init_io(self) -> None:
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._health_thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> KernelSessionPool:
        """Start ``size`` kernels (in parallel) and the health checker."""
        with self._cond:
            self._open()
        with ThreadPoolExecutor(max_workers=max(1, self.size)) as executor:
            futures = [executor.submit(self._start_one) for _ in range(self.size)]
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
            if self._state is PoolState.CLOSED:
                return
            sessions = self._close_books()
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
        deadline = None if timeout is None else started + timeout
        with self._cond:
            while (lease := self._lease(deadline)) is False:
                self._cond.wait(None if deadline is None else deadline - time.monotonic())
        if not isinstance(lease, bool):
            return self._acquired(lease, started)
        try:
            session = self._start_one()
        except BaseException:
            with self._cond:
                self._unreserve()
                self._cond.notify()
            raise
        with self._cond:
            kept = self._keep(session, in_use=True)
        if not kept:
            _shutdown_quietly(session)
            self._check_open()
        return self._acquired(session, started)

    def release(self, session: GatewayKernelSession, *, discard: bool = False) -> None:
        """Give a kernel back; ``discard=True`` (or a dead kernel) replaces it with a new one."""
        with self._cond:
            kept = self._give_back(session, discard)
            self._cond.notify()
        if not kept:
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

    # --- health -------------------------------------------------------------------------------

    def check_health(self) -> int:
        """Check each idle kernel once; replace the dead ones.  Returns how many were replaced."""
        with self._cond:
            candidates = list(self._idle)
        replaced = 0
        for session in candidates:
            with self._cond:
                if not self._lease_for_check(session):
                    continue
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
                if not self._needs_replacement():
                    return
            try:
                session = self._start_one()
            except KernelClientError:
                logger.exception("could not start a replacement kernel")
                with self._cond:
                    self._unreserve()
                return
            with self._cond:
                kept = self._keep(session, in_use=False)
                self._cond.notify()
            if not kept:
                _shutdown_quietly(session)
                return

    def _start_one(self) -> GatewayKernelSession:
        return self._new_session().start()


def _shutdown_quietly(session: GatewayKernelSession) -> None:
    try:
        session.shutdown()
    except KernelClientError:
        logger.warning("could not shut down pooled kernel %s", session.kernel_id, exc_info=True)
