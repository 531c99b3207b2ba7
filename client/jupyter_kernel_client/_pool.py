"""Pools of pre-started kernels: acquire one in microseconds instead of starting one.

By default a kernel serves one acquire: its release shuts it down in the background and starts
a fresh one in its place, so that nothing one caller's code left in a kernel (variables,
imported modules, threads, files in its container) reaches the next caller.  With
``reuse=True`` released kernels are handed out again, state and all.

:class:`PoolBase` keeps the books (idle, in use, being started, being shut down; the pool's
state) for both faces; :class:`KernelSessionPool` adds threads, the async pool
(``_async_pool``) tasks.
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
from concurrent.futures import Future, ThreadPoolExecutor
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

    ``size`` kernels are kept ready and the pool grows on demand up to ``max_size``, which
    bounds every kernel the pool holds: idle, in use, being started and being shut down.  The
    sessions come from a :class:`GatewayConfig` (``Pool(config, size=2)``), the seed's
    arguments (``Pool(http, ws, "python3", size=2, launch_env=...)``; further keywords are
    :class:`GatewayConfig` fields, validated here, once) or ``factory=`` (any callable returning
    a new, unstarted session).  ``files=`` and ``metrics=`` reach every session the pool makes;
    ``metrics`` also times acquisitions.

    ``reuse=False`` (the default): each kernel serves one acquire.  Its release returns at once;
    the kernel is shut down in the background and a fresh one is started to keep ``size``
    ready.  ``reuse=True``: a released kernel goes back to the idle ones as it is, for the next
    acquire — for one caller's own code only: state carries over (variables, imported modules,
    background threads, files), so never share such a pool between callers who must not see
    each other's data.
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
        reuse: bool = False,
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
        if not isinstance(reuse, bool):
            raise TypeError(f"reuse must be True or False, not {reuse!r}")
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
        self.reuse = reuse
        self.health_check_interval = health_check_interval
        self._new_session = factory
        self._metrics = metrics
        self._idle: collections.deque[S] = collections.deque()
        self._in_use: set[S] = set()
        self._total = 0  # idle + in use + being started
        self._shutting_down = 0  # released, being shut down (still counted against max_size)
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
        """Counts of idle and in-use kernels, of all of them (``total``: including ones being
        started) and of released ones still being shut down."""
        return {
            "idle": len(self._idle),
            "in_use": len(self._in_use),
            "total": self._total,
            "shutting_down": self._shutting_down,
        }

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

    def _headroom(self) -> bool:
        return self._total + self._shutting_down < self.max_size

    def _reserve(self) -> bool:
        """Count a session about to be started, if the pool may grow."""
        if not self._headroom():
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

    def _release_keeps(self, discard: bool) -> bool:
        """Whether ``release`` puts the session back among the idle ones."""
        return self.reuse and not discard

    def _give_back(self, session: S, *, keep: bool) -> bool:
        """Return a leased session, to the idle ones if ``keep`` and its kernel is usable.

        ``True`` if the face must shut it down (then :meth:`_shut_down` it) and replenish.
        After ``close()`` there is nothing to do: close shut every kernel of the pool down.
        """
        if self._state is PoolState.CLOSED:
            return False
        if session not in self._in_use:
            raise ValueError("this session was not acquired from this pool")
        self._in_use.remove(session)
        if keep and not session.closed and not session._kernel_died:
            self._idle.append(session)
            return False
        self._total -= 1
        self._shutting_down += 1
        return True

    def _shut_down(self) -> None:
        """Book the end of a shutdown :meth:`_give_back` asked for."""
        self._shutting_down -= 1

    def _lease_for_check(self, session: S) -> bool:
        """Move an idle session to in-use for a health check (``False``: acquired meanwhile)."""
        if session not in self._idle:
            return False
        self._idle.remove(session)
        self._in_use.add(session)
        return True

    def _needs_replacement(self) -> bool:
        """Reserve a replacement if the pool is below ``size`` and may grow."""
        if self._state is not PoolState.OPEN or self._total >= self.size or not self._headroom():
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
    """Keeps ``size`` idle kernels ready and grows on demand up to ``max_size``; by default a
    fresh kernel for every acquire, with ``reuse=True`` kernels handed out again, state and all
    (the arguments are :class:`PoolBase`'s).

    Released kernels are shut down, and replacements started, by background threads.  Idle
    kernels are health-checked every ``health_check_interval`` seconds; dead ones, and kernels
    released with ``discard=True``, found closed or whose kernel died under a request, are shut
    down and replaced.  ``close()`` shuts every kernel down, in use or not, and waits for the
    background shutdowns and starts.
    """

    _session_class = GatewayKernelSession

    def _init_io(self) -> None:
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._health_thread: threading.Thread | None = None
        # Shutdowns and replacement starts: jobs never wait for each other, so any number of
        # workers is deadlock-free; this many lets a burst of releases proceed in parallel.
        self._jobs = ThreadPoolExecutor(
            max_workers=min(32, 2 * self.max_size), thread_name_prefix="kernel-pool"
        )

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
        """Shut down every kernel of the pool, idle or in use, and wait for the shutdowns and
        starts still running in the background."""
        with self._cond:
            if self._state is PoolState.CLOSED:
                return
            sessions = self._close_books()
            self._cond.notify_all()
        self._stop.set()
        if sessions:
            with ThreadPoolExecutor(max_workers=min(8, len(sessions))) as executor:
                executor.map(_shutdown_quietly, sessions)
        # No job is submitted once the pool is closed; a start still running sees the pool
        # closed when it ends, and shuts its kernel down.
        self._jobs.shutdown(wait=True)
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
        """Give a kernel back, without waiting for anything.

        By default the kernel is shut down in the background and a fresh one started in its
        place; with ``reuse=True`` it goes back to the idle ones, unless ``discard=True`` or
        its kernel died.
        """
        with self._cond:
            if self._give_back(session, keep=self._release_keeps(discard)):
                self._submit(self._retire, session)
                if self._needs_replacement():  # room beside the shutdown (max_size > size)
                    self._submit(self._start_replacement)
            self._cond.notify()

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
        """Check each idle kernel once; replace the dead ones, and start any kernel the pool
        lacks to have ``size``.  Returns how many were dead; waits for their replacements."""
        with self._cond:
            candidates = list(self._idle)
        jobs: list[Future[None]] = []
        for session in candidates:
            with self._cond:
                if not self._lease_for_check(session):
                    continue
            try:
                healthy = session.is_alive()
            except KernelClientError:
                healthy = False
            with self._cond:
                if self._give_back(session, keep=healthy):
                    logger.warning("pooled kernel %s is dead; replacing it", session.kernel_id)
                    jobs.append(self._submit(self._retire, session))
                self._cond.notify()
        for job in jobs:
            job.result()
        with self._cond:
            top_up = self._submit(self._replenish) if self._state is PoolState.OPEN else None
        if top_up is not None:
            top_up.result()
        return len(jobs)

    def _health_loop(self) -> None:
        assert self.health_check_interval is not None
        while not self._stop.wait(self.health_check_interval):
            try:
                self.check_health()
            except Exception:
                # The checker must outlive any one failure (gateway briefly down, …).
                logger.exception("kernel pool health check failed")

    # --- background jobs --------------------------------------------------------------------

    def _submit(self, job: Callable[..., None], *args: Any) -> Future[None]:
        """Run ``job`` on a pool thread (call with the lock held, while the pool is open: close
        waits for every job submitted before it)."""
        assert self._state is PoolState.OPEN
        return self._jobs.submit(job, *args)

    def _retire(self, session: GatewayKernelSession) -> None:
        """Shut a released kernel down, then start what the pool lacks."""
        try:
            _shutdown_quietly(session)
        finally:
            with self._cond:
                self._shut_down()
                self._cond.notify_all()  # a slot of max_size is free
        self._replenish()

    def _start_replacement(self) -> None:
        """Start the kernel :meth:`_needs_replacement` reserved, then any more ``size`` needs."""
        if self._start_reserved():
            self._replenish()

    def _replenish(self) -> None:
        """Start kernels until ``size`` are there again (never past ``max_size``)."""
        while True:
            with self._cond:
                if not self._needs_replacement():
                    return
            if not self._start_reserved():
                return

    def _start_reserved(self) -> bool:
        """Start one reserved kernel for the idle ones; ``False`` if that failed or the pool
        closed meanwhile (a failed start is logged: the next health check tries again)."""
        try:
            session = self._start_one()
        except Exception:
            logger.exception("could not start a replacement kernel")
            with self._cond:
                self._unreserve()
                self._cond.notify_all()
            return False
        with self._cond:
            kept = self._keep(session, in_use=False)
            self._cond.notify()
        if not kept:
            _shutdown_quietly(session)
        return kept

    def _start_one(self) -> GatewayKernelSession:
        return self._new_session().start()


def _shutdown_quietly(session: GatewayKernelSession) -> None:
    try:
        session.shutdown()
    except Exception:  # a cleanup, often in the background: logged, never raised
        logger.warning("could not shut down pooled kernel %s", session.kernel_id, exc_info=True)
