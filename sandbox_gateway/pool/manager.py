"""A warm pool of kernels in the gateway: ``POST /api/kernels`` answered by a kernel already up.

Loaded by the gateway's config file (``apply()``), after ``admission.limits``.  Every client gains
from it — the Python client, the notebook, the controller and plain REST — because the pool sits
behind Enterprise Gateway's own start path.

How a pooled kernel lives
    For each kernelspec named in ``SANDBOX_POOL`` the pool keeps that many kernels started ahead
    of time, through the kernelspec's own process proxy and launcher: the same container or pod,
    limits and network rules as any kernel (on Docker, a private network of its own).  Each one
    holds a slot of ``SANDBOX_MAX_KERNELS`` from the moment its start begins.  A pooled kernel is
    outside the gateway's kernel map until it is handed out: ``GET /api/kernels`` does not list
    it, no id of it is reachable over the API or a websocket, and the culler never sees it.  It
    is "ready" once it answered a ``kernel_info_request``.  A pooled kernel that died (checked
    every ``SANDBOX_POOL_CHECK_INTERVAL`` seconds) or waited longer than ``SANDBOX_POOL_MAX_AGE``
    is shut down and replaced.

Claims
    A start request for a pooled kernelspec takes the oldest ready kernel, never one that was handed
    out before.  Before the request returns, the request's kernel variables (``KERNEL_*`` as a cold
    start passes them into the kernel, ``KERNEL_ID`` and ``KERNEL_USERNAME`` included) are set in
    the kernel's ``os.environ`` and ``KERNEL_WORKING_DIR``, if it is an existing directory there,
    becomes its working directory (for container kernels only where Enterprise Gateway passes it on
    a cold start too: ``EG_MIRROR_WORKING_DIRS=true``) — one silent execute, so the session sees
    them in ``os.environ`` and in subprocesses.  The kernel then enters the gateway's map under the
    requested ``KERNEL_ID`` (or the id it was started with), with its launch arguments replaced by
    the request's, so a restart relaunches it as a cold start of that request would have.  Its
    container keeps the label it was started with; the process proxy keeps that key and persists it,
    so a gateway that re-adopts its sessions still finds the container.

    A request that would change the container goes cold, says why in the log and in the metrics,
    and works as before: a kernel image other than the kernelspec's, resources (``KERNEL_CPUS*``,
    ``KERNEL_MEMORY*``, ``KERNEL_GPUS*``), identity, placement or mounts.  So does a request when
    the pool is empty, or for a ``KERNEL_ID`` already in use (which then fails as it always did).

Faults
    A refill that fails backs off exponentially (1 s doubling to 60 s); the first failure of a
    streak is logged as one error with the reason, the recovery as one line, and the metrics
    carry the count and a "failing" gauge.  Kernels started for the pool and not yet handed out
    are shut down with the gateway; after a crash their containers are removed at the next start
    (``proxies.docker``), since the gateway persists sessions only for kernels it handed out.

Metrics (``GET /metrics``, Prometheus text, the API's token when one is set)
    ``sandbox_pool_kernels{kernelspec,state}`` (ready, starting), ``sandbox_pool_target``,
    ``sandbox_kernel_starts_total{kernelspec,source,reason}`` (source warm or cold; a request
    for a kernelspec that does not exist counts under ``other``, reason ``no_such_kernelspec``),
    ``sandbox_kernel_start_seconds{kernelspec,source}``, ``sandbox_pool_refill_failures_total``,
    ``sandbox_pool_refill_failing`` — beside jupyter_server's own metrics.

Settings (bad values stop the gateway with a message)
    ``SANDBOX_POOL``                 ``kernelspec=size`` pairs, comma-separated; empty: no pool
    ``SANDBOX_POOL_MAX_AGE``         seconds a pooled kernel may wait (default 3600)
    ``SANDBOX_POOL_CHECK_INTERVAL``  seconds between health checks (default 10)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import random
import signal
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from sandbox_gateway.admission import limits
from sandbox_gateway.launchers.rules import client_env_names
from sandbox_gateway.metrics import Metrics, port_from_env
from sandbox_gateway.metrics import serve as serve_metrics
from sandbox_gateway.pool.rules import (
    PoolSettings,
    SettingsError,
    claim_code,
    cold_reason,
    container_names,
    kernel_variables,
)

OTHER_KERNELSPEC: Final = "other"
"""The metrics label of a start request for a kernelspec that does not exist."""
POOL_USER: Final = "sandbox-pool"
"""KERNEL_USERNAME of kernels waiting in the pool (container and pod names carry it)."""

PARALLEL_STARTS: Final = 4
"""Pool kernels launched at once per kernelspec (refilling a pool of 20 takes five rounds)."""
READY_TIMEOUT: Final = 60.0
CLAIM_TIMEOUT: Final = 5.0
REFILL_DELAY: Final = 0.25
"""Seconds between a claim and the refill it triggers: a launch does blocking work on the event
loop (spawning the launcher, polling the engine), which would otherwise slow the claims of a
burst and the first requests of the sessions just handed out."""
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 60.0

log = logging.getLogger("sandbox_pool")


# --- the pool ----------------------------------------------------------------------------------


@dataclass(eq=False)
class Pooled:
    """A kernel started for the pool: its launch key (the container's label) and its manager."""

    key: str
    manager: Any
    reservation: Any
    shell: Any = None  # its shell channel, kept open so that a claim needs no new connection
    info: dict[str, Any] = field(default_factory=dict)  # its kernel_info reply's content
    ready_at: float = field(default_factory=time.monotonic)

    def close_shell(self) -> None:
        if self.shell is not None:
            self.shell.close()
            self.shell = None


@dataclass(frozen=True)
class Fill:
    """One kernelspec's pool: kernels claimable now, kernels being started, its configured size."""

    ready: int
    starting: int
    target: int


class KernelPool:
    """The pooled kernels of one gateway; every method runs on the gateway's event loop."""

    def __init__(self, manager: Any, settings: PoolSettings, ledger: Any, metrics: Metrics) -> None:
        self.manager = manager  # Enterprise Gateway's RemoteMappingKernelManager
        self.settings = settings
        self.ledger = ledger  # admission.limits' KernelLedger (None without limits)
        self.metrics = metrics
        self.ready: dict[str, collections.deque[Pooled]] = {
            name: collections.deque() for name in settings.sizes
        }
        self.starting = dict.fromkeys(settings.sizes, 0)
        self._failures = dict.fromkeys(settings.sizes, 0)
        self._refilling: dict[str, asyncio.Task[None]] = {}
        self._scheduled: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()  # shutdowns of pooled kernels
        self._checker: asyncio.Task[None] | None = None
        self._slot_freed = asyncio.Event()
        self._closed = False
        # The kernelspecs' images, read once: a claim compares a requested KERNEL_IMAGE to them.
        specs = {name: self._spec(name) for name in settings.sizes}
        self._images = {name: _image(spec) for name, spec in specs.items()}
        # The variables besides KERNEL_* that the kernelspec's launcher passes into a kernel.
        self._client_envs = {name: _client_envs(spec) for name, spec in specs.items()}
        # The language a claim writes its code in.
        self._languages = {name: _language(spec) for name, spec in specs.items()}
        for name, size in settings.sizes.items():
            metrics.target.labels(name).set(size)
            self._publish(name)

    # --- public -------------------------------------------------------------------------------

    def start(self) -> None:
        for name in self.settings.sizes:
            self._wake(name)
        self._checker = asyncio.ensure_future(self._check_forever())

    def slot_freed(self) -> None:
        """A kernel left the gateway: a pool waiting for a free slot may try again."""
        self._slot_freed.set()

    def fill(self) -> dict[str, Fill]:
        """Per pooled kernelspec, what the pool holds now (what ``sandbox_pool_kernels`` shows)."""
        return {name: self._fill(name) for name in self.settings.sizes}

    async def claim(self, kernel_name: str, kwargs: dict[str, Any]) -> str | None:
        """The id of a pooled kernel now serving this request, or None to start one cold."""
        queue = self.ready.get(kernel_name)
        if queue is None:
            return None
        env: dict[str, str] = dict(kwargs.get("env") or {})
        reason = cold_reason(env, self._launch_env("", {}), self._images[kernel_name])
        kernel_id = env.get("KERNEL_ID")
        if reason is None and kernel_id and kernel_id in self.manager:
            reason = "kernel_id_in_use"
        if reason is None and not queue:
            reason = "empty"
        if reason is not None:
            self._cold(kernel_name, reason, env)
            return None
        from enterprise_gateway.services.sessions.kernelsessionmanager import KernelSessionManager

        user = KernelSessionManager.get_kernel_username(env=dict(env))
        # Enterprise Gateway authorises KERNEL_USERNAME when it launches (its process proxy
        # answers 403 for an unauthorised user); a pooled kernel was launched for the pool, so
        # the same check runs here, with the same answer, before any kernel is taken.
        queue[0].manager.process_proxy._enforce_authorization(env=dict(env))
        while queue:
            pooled = queue.popleft()
            self._wake(kernel_name, delay=REFILL_DELAY)
            if self.ledger is not None:
                try:
                    self.ledger.hand_over(
                        pooled.reservation, user, set(self.manager.list_kernel_ids())
                    )
                except limits.KernelLimitReached as exc:
                    queue.appendleft(pooled)  # untouched: it stays in the pool
                    self._publish(kernel_name)
                    raise limits.limit_refusal(exc) from None
            new_id = kernel_id or pooled.key
            try:
                variables = kernel_variables(
                    env,
                    new_id,
                    user,
                    working_dir=self._keeps_working_dir(pooled.manager),
                    client_envs=self._client_envs[kernel_name],
                )
                code = claim_code(variables, self._languages[kernel_name])
                await self._run(pooled.manager, code, stream=pooled.shell)
            except Exception as exc:
                log.warning("pooled kernel %s failed its claim (%s): replacing it", pooled.key, exc)
                self._discard(pooled)
                continue
            pooled.close_shell()
            self._enter(new_id, pooled, kwargs, env, user)
            self.metrics.starts.labels(kernel_name, "warm", "").inc()
            return new_id
        self._cold(kernel_name, "empty", env)
        return None

    async def close(self, launch_grace: float = 30.0) -> None:
        """Shut every pooled kernel down (the gateway is stopping): launches in progress are
        let finish (up to ``launch_grace`` seconds) so that their kernels are shut down too."""
        self._closed = True
        for handle in self._scheduled.values():
            handle.cancel()
        if self._checker is not None:
            self._checker.cancel()
        refills = [task for task in self._refilling.values() if not task.done()]
        if refills:
            _, late = await asyncio.wait(refills, timeout=launch_grace)
            for task in late:
                task.cancel()  # a launch cancelled mid-way shuts its kernel down if it has one
            await asyncio.gather(*late, return_exceptions=True)
        pooled = [kernel for queue in self.ready.values() for kernel in queue]
        for queue in self.ready.values():
            queue.clear()
        for kernel in pooled:
            self._spawn(self._shutdown(kernel))
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- filling ------------------------------------------------------------------------------

    def _wake(self, name: str, delay: float = 0.0) -> None:
        """Refill ``name`` now, or ``delay`` seconds from the first wake of a burst."""
        task = self._refilling.get(name)
        if self._closed or (task is not None and not task.done()):
            return
        if delay > 0:
            if name not in self._scheduled:
                loop = asyncio.get_running_loop()
                self._scheduled[name] = loop.call_later(delay, self._wake, name)
            return
        handle = self._scheduled.pop(name, None)
        if handle is not None:
            handle.cancel()
        self._refilling[name] = asyncio.ensure_future(self._refill(name))

    def _missing(self, name: str) -> int:
        return self.settings.sizes[name] - len(self.ready[name]) - self.starting[name]

    async def _refill(self, name: str) -> None:
        while not self._closed and self._missing(name) > 0:
            batch = min(self._missing(name), PARALLEL_STARTS)
            results = await asyncio.gather(
                *(self._launch(name) for _ in range(batch)), return_exceptions=True
            )
            errors = [result for result in results if isinstance(result, BaseException)]
            for result in results:
                if isinstance(result, Pooled):
                    if self._closed:
                        self._spawn(self._shutdown(result))
                    else:
                        self.ready[name].append(result)
            self._publish(name)
            if errors and all(_is_limit(error) for error in errors):
                # The gateway is full: not a fault.  Try again when a kernel leaves (or later).
                log.debug("pool %s: waiting for a free kernel slot (%s)", name, errors[0])
                self._slot_freed.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._slot_freed.wait(), self.settings.check_interval)
                continue
            if not errors:
                if self._failures[name]:
                    log.info("pool %s: kernels start again", name)
                self._failures[name] = 0
                self.metrics.refill_failing.labels(name).set(0)
                continue
            if any(isinstance(error, asyncio.CancelledError) for error in errors):
                return
            self.metrics.refill_failures.labels(name).inc(len(errors))
            self.metrics.refill_failing.labels(name).set(1)
            self._failures[name] += 1
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self._failures[name] - 1))
            delay *= random.uniform(0.8, 1.2)
            if self._failures[name] == 1:
                log.error(
                    "pool %s: cannot start a kernel: %s (retrying with backoff up to %.0f s)",
                    name,
                    _describe(errors[0]),
                    BACKOFF_MAX,
                )
            else:
                log.debug("pool %s: still failing (%s); retry in %.1f s", name, errors[0], delay)
            await asyncio.sleep(delay)

    async def _launch(self, name: str) -> Pooled:
        key = str(uuid.uuid4())
        reservation = None
        if self.ledger is not None:
            reservation = self.ledger.reserve(
                POOL_USER, set(self.manager.list_kernel_ids()), per_user=False
            )
            self.ledger.named(reservation, key)
        self.starting[name] += 1
        self._publish(name)
        manager: Any = None
        shell: Any = None
        try:
            manager = self.manager.kernel_manager_factory(
                connection_file=os.path.join(self.manager.connection_dir, f"kernel-{key}.json"),
                parent=self.manager,
                log=self.manager.log,
                kernel_name=name,
                kernel_spec_manager=self.manager.kernel_spec_manager,
            )
            manager.kernel_id = key
            await manager.start_kernel(env=self._launch_env(key, {"KERNEL_USERNAME": POOL_USER}))
            manager.stop_restarter()  # the pool watches its kernels until one is handed out
            shell = manager.connect_shell()
            info = await self._until_ready(manager, shell)
        except BaseException:
            if shell is not None:
                shell.close()
            if reservation is not None:
                self.ledger.release(reservation)
            if manager is not None and getattr(manager, "has_kernel", False):
                self._spawn(self._shutdown(Pooled(key, manager, None)))
            elif getattr(manager, "process_proxy", None) is not None:
                # Cancelled or failed while its process proxy waited for the kernel to report:
                # kill whatever it started (EG's kill() blocks while it polls: off the loop).
                self._spawn(asyncio.to_thread(_quietly, manager.process_proxy.kill))
            raise
        finally:
            self.starting[name] -= 1
        log.info("pool %s: kernel %s ready", name, key)
        return Pooled(key, manager, reservation, shell, info)

    async def _until_ready(self, manager: Any, shell: Any) -> dict[str, Any]:
        """Wait for the new kernel's kernel_info reply (a kernel that exits first fails now),
        then warm it up."""
        reply = asyncio.ensure_future(self._run(manager, None, READY_TIMEOUT, stream=shell))
        try:
            while True:
                done, _ = await asyncio.wait({reply}, timeout=0.5)
                if done:
                    info = reply.result()
                    break
                if not await manager.is_alive():
                    raise RuntimeError("the kernel exited before it answered kernel_info")
        finally:
            reply.cancel()
        if self._languages.get(manager.kernel_name, "python") != "python":
            return info
        # An IPython kernel's first execution costs it ~12 ms more than later ones (its display
        # hook's first run): pay that now, then clear the output cache it filled (``_``, ``Out``),
        # so the session's first cell finds a kernel exactly as fresh as a cold one.
        await self._run(manager, "0", stream=shell, silent=False)
        await self._run(manager, "get_ipython().displayhook.flush()", stream=shell)
        return info

    def _launch_env(self, kernel_id: str, env: Mapping[str, str]) -> dict[str, str]:
        """What Enterprise Gateway's start handler would pass: inherited variables, then env."""
        inherited = getattr(self.manager.parent, "inherited_envs", []) or []
        launch = {name: os.environ[name] for name in inherited if name in os.environ}
        launch.update(env)
        launch["KERNEL_ID"] = kernel_id
        return launch

    @staticmethod
    def _keeps_working_dir(km: Any) -> bool:
        """Whether a cold start would pass KERNEL_WORKING_DIR to this kernel: container proxies
        drop it unless EG_MIRROR_WORKING_DIRS is true."""
        from enterprise_gateway.services.processproxies.container import ContainerProcessProxy

        if not isinstance(km.process_proxy, ContainerProcessProxy):
            return True
        return os.environ.get("EG_MIRROR_WORKING_DIRS", "false").lower() == "true"

    def _spec(self, name: str) -> Any:
        try:
            return self.manager.kernel_spec_manager.get_kernel_spec(name)
        except Exception:
            return None

    # --- handing out --------------------------------------------------------------------------

    def _enter(
        self, kernel_id: str, pooled: Pooled, kwargs: dict[str, Any], env: dict[str, str], user: str
    ) -> None:
        """Put a claimed kernel in the gateway's map as Enterprise Gateway's own start would."""
        # jupyter_server defines the gauge in both branches of a try: mypy sees no export of it.
        from jupyter_server._tz import utcnow
        from jupyter_server.prometheus.metrics import KERNEL_CURRENTLY_RUNNING_TOTAL  # type: ignore[attr-defined]

        manager, km = self.manager, pooled.manager
        km.kernel_id = kernel_id
        # A restart relaunches with the request's arguments, as a cold start of it would.
        launch_env = self._launch_env(kernel_id, {**env, "KERNEL_USERNAME": user})
        km._launch_args = {**(km._launch_args or {}), "env": launch_env}
        km.user_overrides.update(
            {name: value for name, value in launch_env.items() if name.startswith("KERNEL_")}
        )
        manager._kernels[kernel_id] = km
        manager._kernel_connections[kernel_id] = 0
        manager._kernel_ports[kernel_id] = km.ports
        manager.start_watching_activity(kernel_id)
        manager.add_restart_callback(
            kernel_id, lambda: manager._handle_kernel_died(kernel_id), "dead"
        )
        km.start_restarter()
        km.execution_state, km.reason, km.last_activity = "idle", "", utcnow()
        if pooled.info.get("protocol_version"):
            # jupyter_server asks a kernel for kernel_info once, when its first websocket opens,
            # and keeps the answer on the kernel: the pool has it already, so the session's
            # websocket opens without that round trip.
            known: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            known.set_result(pooled.info)
            km._kernel_info_future = known
        if not manager._initialized_culler:
            manager.initialize_culler()
        KERNEL_CURRENTLY_RUNNING_TOTAL.labels(type=km.kernel_name).inc()
        if self.ledger is not None:
            self.ledger.named(pooled.reservation, kernel_id)
            self.ledger.release(pooled.reservation)
        session_args = {**kwargs, "env": launch_env}
        manager.parent.kernel_session_manager.create_session(kernel_id, **session_args)
        self._publish(km.kernel_name)
        # The container or pod is then named as a cold start for this user would be (Docker:
        # proxies.docker; a process proxy without the hook keeps its name).
        getattr(km.process_proxy, "handed_over", lambda user: None)(user)
        log.info(
            "kernel %s (%s) served from the pool to %s (container key %s)",
            kernel_id,
            km.kernel_name,
            user,
            pooled.key,
        )

    def _cold(self, name: str, reason: str, env: Mapping[str, str]) -> None:
        self.metrics.starts.labels(name, "cold", reason).inc()
        detail = {
            "image": f"KERNEL_IMAGE {env.get('KERNEL_IMAGE')!r} is not the pooled image",
            "empty": "the pool is empty",
            "kernel_id_in_use": "the requested KERNEL_ID is in use",
        }.get(reason, f"the request sets {reason} ({container_names(env, reason)})")
        log.info("pool miss for %s: %s; starting a kernel cold", name, detail)

    # --- health -------------------------------------------------------------------------------

    async def _check_forever(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.settings.check_interval)
            for name, queue in self.ready.items():
                for pooled in list(queue):
                    age = time.monotonic() - pooled.ready_at
                    reason = "reached SANDBOX_POOL_MAX_AGE" if age > self.settings.max_age else ""
                    if not reason:
                        try:
                            alive = await pooled.manager.is_alive()
                        except Exception as exc:
                            alive, reason = False, f"cannot be polled ({exc})"
                        if not alive:
                            reason = reason or "died"
                    if reason and pooled in queue:
                        queue.remove(pooled)
                        log.warning("pool %s: kernel %s %s: replacing it", name, pooled.key, reason)
                        self._discard(pooled)
                        self._wake(name)

    def _discard(self, pooled: Pooled) -> None:
        if self.ledger is not None and pooled.reservation is not None:
            self.ledger.release(pooled.reservation)
        self._publish(pooled.manager.kernel_name)
        self._spawn(self._shutdown(pooled))

    async def _shutdown(self, pooled: Pooled) -> None:
        pooled.close_shell()
        try:
            await pooled.manager.shutdown_kernel(now=True)
        except Exception as exc:
            log.warning("pooled kernel %s: shutdown failed: %s", pooled.key, exc)

    # --- plumbing -----------------------------------------------------------------------------

    def _fill(self, name: str) -> Fill:
        return Fill(len(self.ready[name]), self.starting[name], self.settings.sizes[name])

    def _publish(self, name: str) -> None:
        if name in self.ready:
            fill = self._fill(name)
            self.metrics.kernels.labels(name, "ready").set(fill.ready)
            self.metrics.kernels.labels(name, "starting").set(fill.starting)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self,
        km: Any,
        code: str | None,
        timeout: float = CLAIM_TIMEOUT,
        stream: Any = None,
        silent: bool = True,
    ) -> dict[str, Any]:
        """Send one shell request (execute ``code`` silently, or kernel_info) on ``stream`` (or
        a connection of its own) and await its reply; an error reply raises."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[dict[str, Any]] = loop.create_future()
        if code is None:
            request = km.session.msg("kernel_info_request", {})
        else:
            content: dict[str, Any] = {
                "code": code,
                "silent": silent,
                "store_history": False,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            }
            request = km.session.msg("execute_request", content)

        def on_reply(frames: list[Any]) -> None:
            _, parts = km.session.feed_identities(frames)
            reply = km.session.deserialize(parts)
            mine = reply["parent_header"].get("msg_id") == request["header"]["msg_id"]
            if mine and not answer.done():
                answer.set_result(reply)

        own = stream is None
        channel = km.connect_shell() if own else stream
        try:
            channel.on_recv(on_reply)
            km.session.send(channel, request)  # queued by ZMQ until the connection is up
            reply = await asyncio.wait_for(answer, timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no reply from the kernel within {timeout:.0f} s") from None
        finally:
            if own:
                channel.close()
        content = reply["content"]
        if content.get("status", "ok") != "ok":
            raise RuntimeError(f"{content.get('ename')}: {content.get('evalue')}")
        return content


def _image(spec: Any) -> str | None:
    proxy = (getattr(spec, "metadata", None) or {}).get("process_proxy") or {}
    image = (proxy.get("config") or {}).get("image_name")
    return image if isinstance(image, str) else None


def _client_envs(spec: Any) -> frozenset[str]:
    # The launchers' own reading of the kernelspec's list: a claim passes what a cold start would.
    return client_env_names(str((getattr(spec, "env", None) or {}).get("SANDBOX_CLIENT_ENVS", "")))


def _language(spec: Any) -> str:
    return str(getattr(spec, "language", None) or "python").lower()


def _quietly(action: Any) -> None:
    try:
        action()
    except Exception as exc:
        log.debug("ignored while cleaning up a failed pool launch: %s", exc)


def _is_limit(error: BaseException) -> bool:
    return isinstance(error, limits.KernelLimitReached)


def _describe(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text if len(text) < 500 else text[:500] + "…"


# --- Enterprise Gateway patches ------------------------------------------------------------------

_pool: KernelPool | None = None


def fill() -> dict[str, Fill]:
    """The running gateway's pool, per kernelspec (``{}``: no pool, or not started yet)."""
    return {} if _pool is None else _pool.fill()


def _serve_starts(metrics: Metrics) -> None:
    """Start requests try the pool first; every start is counted and timed."""
    from enterprise_gateway.services.kernels.remotemanager import RemoteMappingKernelManager
    from jupyter_client.kernelspec import NoSuchKernel

    original_start = RemoteMappingKernelManager.start_kernel

    async def start_kernel(self: Any, *args: Any, **kwargs: Any) -> str:
        # The name is the client's until a kernelspec answers to it: it becomes a metrics label
        # only then (a label per name sent would let any client grow /metrics without bound).
        name = str(kwargs.get("kernel_name") or self.default_kernel_name)
        began = time.perf_counter()
        kernel_id = await _pool.claim(name, kwargs) if _pool is not None else None
        source = "warm"
        if kernel_id is None:
            source = "cold"
            pooled = _pool is not None and name in _pool.ready
            try:
                kernel_id = await original_start(self, *args, **kwargs)
            except NoSuchKernel:
                metrics.starts.labels(OTHER_KERNELSPEC, "cold", "no_such_kernelspec").inc()
                raise
            if not pooled:
                metrics.starts.labels(name, "cold", "not_pooled").inc()
        metrics.start_seconds.labels(name, source).observe(time.perf_counter() - began)
        return kernel_id

    RemoteMappingKernelManager.start_kernel = start_kernel  # type: ignore[method-assign]

    original_remove = RemoteMappingKernelManager.remove_kernel

    def remove_kernel(self: Any, kernel_id: str) -> None:
        original_remove(self, kernel_id)
        if _pool is not None:
            _pool.slot_freed()

    RemoteMappingKernelManager.remove_kernel = remove_kernel  # type: ignore[method-assign]


def _persist_container_key() -> None:
    """A handed-out kernel's proxy keeps the key its container or pod is labelled with, also in
    the persisted session (a gateway that re-adopts it must find that container)."""
    from enterprise_gateway.services.processproxies.processproxy import BaseProcessProxyABC

    original_get = BaseProcessProxyABC.get_process_info
    original_load = BaseProcessProxyABC.load_process_info

    def get_process_info(self: Any) -> dict[str, Any]:
        info: dict[str, Any] = original_get(self)
        info["sandbox_kernel_key"] = self.kernel_id
        return info

    def load_process_info(self: Any, process_info: dict[str, Any]) -> None:
        original_load(self, process_info)
        self.kernel_id = process_info.get("sandbox_kernel_key") or self.kernel_id

    BaseProcessProxyABC.get_process_info = get_process_info  # type: ignore[method-assign]
    BaseProcessProxyABC.load_process_info = load_process_info  # type: ignore[method-assign]


def _run_with_the_gateway(settings: PoolSettings, metrics: Metrics, ledger: Any) -> None:
    from enterprise_gateway.enterprisegatewayapp import EnterpriseGatewayApp
    from jupyter_client.kernelspec import NoSuchKernel
    from tornado.ioloop import IOLoop

    original_start = EnterpriseGatewayApp.start
    original_shutdown = EnterpriseGatewayApp.shutdown

    def start(self: Any) -> None:
        global _pool
        for name in settings.sizes:
            try:
                spec = self.kernel_manager.kernel_spec_manager.get_kernel_spec(name)
            except NoSuchKernel:
                raise SystemExit(
                    f"SANDBOX_POOL names kernelspec {name!r}, which does not exist"
                ) from None
            try:
                claim_code({}, _language(spec))
            except ValueError as exc:
                raise SystemExit(f"SANDBOX_POOL names kernelspec {name!r}: {exc}") from None
        _pool = KernelPool(self.kernel_manager, settings, ledger, metrics)
        IOLoop.current().add_callback(_pool.start)
        original_start(self)

    def shutdown(self: Any) -> None:
        if _pool is not None:
            # A local kernel being shut down may signal its process group; the stop goes on.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            asyncio.get_event_loop().run_until_complete(_pool.close())
        original_shutdown(self)

    EnterpriseGatewayApp.start = start  # type: ignore[method-assign]
    EnterpriseGatewayApp.shutdown = shutdown  # type: ignore[method-assign]


def apply(env: Mapping[str, str] | None = None, *, max_kernels: int | None = None) -> PoolSettings:
    """Read the settings (exit with a message if one is invalid) and patch the gateway."""
    try:
        settings = PoolSettings.from_env(os.environ if env is None else env)
    except SettingsError as exc:
        raise SystemExit(f"sandbox gateway: invalid setting: {exc}") from None
    if max_kernels is not None and settings.total > max_kernels:
        raise SystemExit(
            f"sandbox gateway: SANDBOX_POOL holds {settings.total} kernels, more than "
            f"SANDBOX_MAX_KERNELS ({max_kernels})"
        )
    metrics = Metrics()
    _serve_starts(metrics)
    _persist_container_key()
    serve_metrics(port_from_env(os.environ if env is None else env))
    _run_with_the_gateway(settings, metrics, limits.LEDGER)
    return settings
