"""Reconcile logic of a SandboxSession: plain async functions, no kopf.

Each step takes one :class:`Event` (the object's ``meta``/``spec``/``status`` as kopf hands them
over, a :class:`~controller.gateway.GatewayClient`, the settings and the time) and returns an
:class:`Outcome`: the status patch to apply, annotations to set, and whether the handler should
retry later (gateway unreachable) or give up for good (a spec that can never work).  The kopf
handlers (``handlers.py``) only translate an outcome into ``patch`` writes and kopf errors.

Kernel identity.  The kernel id is derived from the object's uid (:func:`derive_kernel_id`) and
sent to the gateway as ``env.KERNEL_ID``, so any retry, resume or restart of the controller
finds the kernel it may already have started instead of starting a second one.  Derived ids
carry a fixed 32-bit tag (``5a9d5e55-…``): that is how garbage collection tells the
controller's kernels from the ones that notebook users or SDK clients start on the same gateway
(the gateway's kernel model carries no env or labels to tell them apart).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Final, Protocol

from jupyter_kernel_client import (
    EgressRefusedError,
    GatewayError,
    GatewayRefusedError,
    KernelLimitError,
    TransportError,
    UnknownKernelNameError,
)

from .gateway import Kernel, parse_time
from .platform_env import reserved_names
from .settings import ControllerSettings

KERNEL_ID_TAG: Final = bytes.fromhex("5a9d5e55")
"""First four bytes of every kernel id the controller derives (its GC marker)."""
RESTARTS_ANNOTATION: Final = "minisandbox.dev/kernel-restarts"
"""How many times the controller restarted the session's kernel (restart policy budget)."""
SESSION_ENV: Final = "KERNEL_SANDBOX_SESSION"
"""Launch env naming the owning session (``namespace/name``), for people reading kernel pods."""

PENDING, READY = "Pending", "Ready"
# No "Starting" phase: the gateway answers a start only once the kernel runs, so a session goes
# from Pending (or no phase) to Ready in one reconcile, and the CRD's enum has no such name.
FAILED, TERMINATING, EXPIRED = "Failed", "Terminating", "Expired"
TERMINAL_PHASES: Final = frozenset({FAILED, EXPIRED})
"""Phases in which a session owns no kernel and the controller does nothing more."""

Status = dict[str, Any]


class Gateway(Protocol):
    """What reconciling needs from the gateway (:class:`~controller.gateway.GatewayClient`)."""

    async def kernel(self, kernel_id: str) -> Kernel | None: ...
    async def kernels(self) -> list[Kernel]: ...
    async def ensure_kernel(
        self, kernel_id: str, kernel_name: str, env: dict[str, str], *, probe_first: bool = True
    ) -> tuple[Kernel, bool]: ...
    async def shutdown_kernel(self, kernel_id: str) -> None: ...


@dataclass
class Outcome:
    """The result of one reconcile step."""

    status: Status = field(default_factory=dict)
    """Merge-patch for ``.status`` (``None`` values delete keys)."""
    annotations: dict[str, str | None] = field(default_factory=dict)
    retry_in: float | None = None
    """Set when the step failed temporarily: try again after this many seconds."""
    permanent_error: str | None = None
    """Set when the spec can never work: the session is Failed, do not retry."""
    action: str = "none"
    """What was done, for metrics and logs: none, started, adopted, restarted, expired, failed,
    released, waiting."""


# --- identity ----------------------------------------------------------------------------------


def derive_kernel_id(uid: str) -> str:
    """The session's kernel id: a v4 UUID, a pure function of the object's uid, tagged."""
    if not uid:
        raise ValueError("the object has no uid")
    digest = hashlib.sha256(f"minisandbox.dev/SandboxSession/{uid}".encode()).digest()
    return str(uuid.UUID(bytes=KERNEL_ID_TAG + digest[:12], version=4))


def is_controller_kernel_id(kernel_id: str) -> bool:
    """Whether ``kernel_id`` has the shape of an id from :func:`derive_kernel_id`."""
    try:
        parsed = uuid.UUID(kernel_id)
    except ValueError:
        return False
    return parsed.version == 4 and parsed.bytes[:4] == KERNEL_ID_TAG and str(parsed) == kernel_id


@dataclass(frozen=True)
class Session:
    """A SandboxSession as the reconciler sees it (spec defaults applied)."""

    namespace: str
    name: str
    uid: str
    generation: int | None
    created: datetime | None
    kernel_name: str
    env: dict[str, str]
    cpu: str | None
    memory: str | None
    idle_timeout: int | None
    max_lifetime: int | None
    restarts: int
    egress: tuple[str, ...] = ()
    """``spec.egress.allow``: the names the kernel may reach (the gateway's ceiling bounds it)."""

    @property
    def kernel_id(self) -> str:
        return derive_kernel_id(self.uid)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def session_of(
    meta: Mapping[str, Any], spec: Mapping[str, Any], settings: ControllerSettings
) -> Session:
    resources = spec.get("resources") or {}
    idle = spec.get("idleTimeoutSeconds")
    if idle is None and settings.default_idle_timeout_seconds:
        idle = settings.default_idle_timeout_seconds
    annotations = meta.get("annotations") or {}
    try:
        restarts = int(annotations.get(RESTARTS_ANNOTATION, 0))
    except (TypeError, ValueError):
        restarts = 0
    generation = meta.get("generation")
    return Session(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        generation=generation if isinstance(generation, int) else None,
        created=parse_time(meta.get("creationTimestamp")),
        kernel_name=str(spec.get("kernelName") or settings.default_kernel_name),
        env={str(k): str(v) for k, v in (spec.get("env") or {}).items()},
        cpu=_opt_str(resources.get("cpu")),
        memory=_opt_str(resources.get("memory")),
        idle_timeout=int(idle) if idle else None,
        max_lifetime=int(spec["maxLifetimeSeconds"]) if spec.get("maxLifetimeSeconds") else None,
        restarts=restarts,
        egress=tuple(str(entry) for entry in (spec.get("egress") or {}).get("allow") or ()),
    )


def _opt_str(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def spec_env_problem(session: Session) -> str | None:
    """Why the session's ``spec.env`` can never be launched, or None when it can.

    The CRD refuses these names at admission; a spec written under an older CRD still gets here.
    """
    reserved = reserved_names(session.env)
    if not reserved:
        return None
    return (
        f"spec.env sets {', '.join(reserved)}, which the platform controls "
        "(the kernel's size comes from spec.resources, its egress from spec.egress.allow)"
    )


def owner_problem(session: Session, settings: ControllerSettings) -> str | None:
    """Why the session's kernel has no owner to start it for, or None."""
    if not settings.namespace_tenants or session.namespace in settings.namespace_tenants:
        return None
    return (
        f"namespace {session.namespace!r} is mapped to no gateway tenant "
        "(SANDBOX_NAMESPACE_TENANTS, the chart's controller.namespaceTenants)"
    )


def launch_env(session: Session, settings: ControllerSettings) -> dict[str, str]:
    """The kernel's launch environment: the spec's env plus what the gateway's process proxies
    read (``KERNEL_CPUS``/``KERNEL_MEMORY`` and their ``_LIMIT`` twins: request = limit), the
    egress allow-list (``KERNEL_EGRESS_ALLOW``), and the tenant the kernel is started for, when
    namespaces are mapped to tenants."""
    env = dict(session.env)
    env[SESSION_ENV] = session.key
    owner = settings.namespace_tenants.get(session.namespace)
    if owner is not None:
        env["KERNEL_USERNAME"] = owner
    if session.cpu:
        env["KERNEL_CPUS"] = env["KERNEL_CPUS_LIMIT"] = session.cpu
    if session.memory:
        env["KERNEL_MEMORY"] = env["KERNEL_MEMORY_LIMIT"] = session.memory
    if session.egress:
        env["KERNEL_EGRESS_ALLOW"] = ",".join(session.egress)
    return env


# --- status ------------------------------------------------------------------------------------


def iso(moment: datetime) -> str:
    """Kubernetes' time format: UTC, seconds precision, ``Z``."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_status(
    phase: str,
    *,
    session: Session,
    settings: ControllerSettings,
    previous: Mapping[str, Any],
    now: datetime,
    reason: str,
    message: str,
    kernel: Kernel | None = None,
) -> Status:
    """The whole status for ``phase``; kernel fields are cleared when there is no kernel."""
    has_kernel = phase == READY or (phase == PENDING and kernel is not None)
    last_activity = kernel.last_activity if kernel is not None else None
    status: Status = {
        "phase": phase,
        "kernelId": session.kernel_id if has_kernel else None,
        "gatewayUrl": settings.public_gateway_url if has_kernel else None,
        "websocketUrl": settings.public_websocket_url if has_kernel else None,
        "lastActivity": iso(last_activity) if last_activity else previous.get("lastActivity"),
        "message": message,
        "conditions": [
            ready_condition(
                phase == READY,
                reason=reason,
                message=message,
                generation=session.generation,
                previous=previous.get("conditions"),
                now=now,
            )
        ],
    }
    if session.generation is not None:
        status["observedGeneration"] = session.generation
    return status


def ready_condition(
    ready: bool,
    *,
    reason: str,
    message: str,
    generation: int | None,
    previous: Iterable[Mapping[str, Any]] | None,
    now: datetime,
) -> dict[str, Any]:
    """The ``Ready`` condition; ``lastTransitionTime`` moves only when its status flips."""
    value = "True" if ready else "False"
    transition = iso(now)
    for condition in previous or ():
        if condition.get("type") == "Ready" and condition.get("status") == value:
            transition = str(condition.get("lastTransitionTime") or transition)
    condition_: dict[str, Any] = {
        "type": "Ready",
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
    }
    if generation is not None:
        condition_["observedGeneration"] = generation
    return condition_


# --- one reconcile run -------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """What one reconcile run works with: the object as kopf handed it over (``spec`` is the
    new one for an update), the gateway, the settings and the time of the run."""

    meta: Mapping[str, Any]
    spec: Mapping[str, Any]
    status: Mapping[str, Any]
    gateway: Gateway
    settings: ControllerSettings
    now: datetime

    @functools.cached_property
    def session(self) -> Session:
        return session_of(self.meta, self.spec, self.settings)

    def new_status(
        self, phase: str, *, reason: str, message: str, kernel: Kernel | None = None
    ) -> Status:
        return build_status(
            phase,
            session=self.session,
            settings=self.settings,
            previous=self.status,
            now=self.now,
            reason=reason,
            message=message,
            kernel=kernel,
        )


def _temporary(
    event: Event, exc: Exception, *, doing: str, reason: str = "GatewayUnavailable"
) -> Outcome:
    """Gateway unreachable or failing, or a kernel limit reached: keep the phase (Pending if
    none yet), say why, retry."""
    status = event.status
    phase = str(status.get("phase") or PENDING)
    if reason == "GatewayUnavailable":
        message = f"gateway unavailable while trying to {doing}: {exc}; retrying"
    else:
        message = f"cannot {doing} yet: {exc}; retrying"
    new = event.new_status(phase, reason=reason, message=message)
    if phase == READY:
        # The kernel may well be running; the controller just cannot tell right now.
        new["conditions"][0]["status"] = "Unknown"
    else:
        for key in ("kernelId", "gatewayUrl", "websocketUrl"):
            new[key] = status.get(key)
    return Outcome(new, retry_in=event.settings.retry_delay_seconds, action="waiting")


def _failed(event: Event, reason: str, message: str, *, permanent: bool) -> Outcome:
    new = event.new_status(FAILED, reason=reason, message=message)
    return Outcome(new, permanent_error=message if permanent else None, action="failed")


# --- reconcile steps ---------------------------------------------------------------------------


async def ensure_kernel(event: Event) -> Outcome:
    """Create/resume: make sure the session's kernel runs; Ready with its id, or why not."""
    if event.status.get("phase") in TERMINAL_PHASES:
        return Outcome()
    return await _start(event, restarting=False)


async def _start(event: Event, *, restarting: bool, message: str = "") -> Outcome:
    session, gateway = event.session, event.gateway
    problem = spec_env_problem(session)
    if problem is not None:
        return _failed(event, "ReservedEnv", problem, permanent=True)
    problem = owner_problem(session, event.settings)
    if problem is not None:
        return _failed(event, "NoTenant", problem, permanent=True)
    # A session with no phase yet is on its first attempt: its kernel almost never exists.
    probe_first = restarting or bool(event.status.get("phase"))
    try:
        kernel, started = await gateway.ensure_kernel(
            session.kernel_id,
            session.kernel_name,
            launch_env(session, event.settings),
            probe_first=probe_first,
        )
        if kernel.dead:
            # The gateway still lists a dead kernel under our id: clear it, then start afresh.
            await gateway.shutdown_kernel(session.kernel_id)
            kernel, started = await gateway.ensure_kernel(
                session.kernel_id, session.kernel_name, launch_env(session, event.settings)
            )
    except UnknownKernelNameError as exc:
        return _failed(event, "UnknownKernelName", str(exc), permanent=True)
    except KernelLimitError as exc:
        # A quota frees up when some kernel ends: wait for it, as for a gateway that is down.
        return _temporary(event, exc, doing="start a kernel", reason="KernelLimitReached")
    except EgressRefusedError as exc:
        # A list beyond the operator's ceiling, or a gateway without egress: never started
        # without it (a kernel without the egress it was promised would fail later, obscurely).
        return _failed(event, "EgressRefused", str(exc), permanent=True)
    except GatewayRefusedError as exc:
        return _failed(event, "GatewayRefused", str(exc), permanent=True)
    except (TransportError, GatewayError) as exc:
        return _temporary(event, exc, doing="start a kernel")
    if not message:
        message = f"kernel {kernel.id} ({session.kernel_name}) is running"
    new = event.new_status(READY, reason="KernelRunning", message=message, kernel=kernel)
    action = "restarted" if restarting else "started" if started else "adopted"
    return Outcome(new, action=action)


async def check_kernel(event: Event) -> Outcome:
    """Periodic check of a Ready session: lifetime, liveness (restart policy), idleness."""
    if event.status.get("phase") != READY:
        return Outcome()
    session, settings, now = event.session, event.settings, event.now
    if session.max_lifetime and session.created is not None:
        age = (now - session.created).total_seconds()
        if age >= session.max_lifetime:
            return await _expire(
                event,
                "LifetimeExceeded",
                f"the session reached its maximum lifetime of {session.max_lifetime} s",
            )
    try:
        kernel = await event.gateway.kernel(session.kernel_id)
    except (TransportError, GatewayError) as exc:
        return _temporary(event, exc, doing="check the kernel")
    if kernel is None or kernel.dead:
        how = "is gone from the gateway" if kernel is None else "is dead"
        if session.restarts >= settings.max_restarts:
            if kernel is not None:
                await _shutdown_quietly(event.gateway, session.kernel_id)
            return _failed(
                event,
                "KernelDied",
                f"the kernel {how} and the restart budget ({settings.max_restarts}) is spent",
                permanent=False,
            )
        count = session.restarts + 1
        outcome = await _start(
            event,
            restarting=True,
            message=f"the kernel {how}; restarted it ({count}/{settings.max_restarts})",
        )
        if outcome.action == "restarted":
            outcome.annotations[RESTARTS_ANNOTATION] = str(count)
        return outcome
    last_activity = kernel.last_activity or parse_time(event.status.get("lastActivity"))
    if session.idle_timeout and last_activity is not None:
        idle = (now - last_activity).total_seconds()
        if idle >= session.idle_timeout:
            return await _expire(
                event,
                "IdleTimeout",
                f"the kernel was idle for {int(idle)} s "
                f"(idleTimeoutSeconds={session.idle_timeout})",
            )
    if last_activity is not None and event.status.get("lastActivity") != iso(last_activity):
        return Outcome({"lastActivity": iso(last_activity)}, action="none")
    return Outcome()


async def _expire(event: Event, reason: str, message: str) -> Outcome:
    try:
        await event.gateway.shutdown_kernel(event.session.kernel_id)
    except (TransportError, GatewayError) as exc:
        return _temporary(event, exc, doing="shut an expired kernel down")
    new = event.new_status(EXPIRED, reason=reason, message=message + "; the kernel was shut down")
    return Outcome(new, action="expired")


async def _shutdown_quietly(gateway: Gateway, kernel_id: str) -> None:
    # Garbage collection removes it once the gateway answers again.
    with contextlib.suppress(TransportError, GatewayError):
        await gateway.shutdown_kernel(kernel_id)


async def apply_spec_change(event: Event, old_spec: Mapping[str, Any]) -> Outcome:
    """A spec edit (``event.spec`` is the new one): timeouts apply from the next check; a new
    kernel name, env, resources or egress list replace the kernel (same id, new launch): a
    running kernel keeps the grants it started with."""
    session = event.session
    if event.status.get("phase") in TERMINAL_PHASES:
        return Outcome(_generation_seen(session, event.status))
    before = session_of(event.meta, old_spec, event.settings)
    relaunch = (before.kernel_name, before.env, before.cpu, before.memory, before.egress) != (
        session.kernel_name,
        session.env,
        session.cpu,
        session.memory,
        session.egress,
    )
    if not relaunch:
        return Outcome(_generation_seen(session, event.status))
    try:
        await event.gateway.shutdown_kernel(session.kernel_id)
    except (TransportError, GatewayError) as exc:
        return _temporary(event, exc, doing="replace the kernel after a spec change")
    message = f"the spec changed: kernel relaunched as {session.kernel_name}"
    return await _start(event, restarting=False, message=message)


def _generation_seen(session: Session, status: Mapping[str, Any]) -> Status:
    """Record that the current generation was seen, changing nothing else."""
    if session.generation is None:
        return {}
    conditions = [
        {**c, "observedGeneration": session.generation} for c in status.get("conditions") or []
    ]
    return {"observedGeneration": session.generation, "conditions": conditions or None}


async def release_kernel(event: Event) -> Outcome:
    """Deletion: shut the kernel down (a missing kernel is fine); retry while unreachable."""
    try:
        await event.gateway.shutdown_kernel(event.session.kernel_id)
    except (TransportError, GatewayError) as exc:
        outcome = _temporary(event, exc, doing="shut the kernel down")
        outcome.status["phase"] = TERMINATING
        return outcome
    return Outcome(action="released")


# --- garbage collection ------------------------------------------------------------------------


@dataclass(frozen=True)
class GarbageReport:
    collected: list[str]
    """Kernels shut down in this pass."""
    suspects: frozenset[str]
    """Controller kernels orphaned in this pass, collected on the next if still orphaned."""


async def collect_garbage(
    gateway: Gateway, owned: Iterable[str], suspects: frozenset[str]
) -> GarbageReport:
    """Shut down controller kernels (tagged ids) that no live session owns.

    ``owned`` are the kernel ids of the sessions that currently should have a kernel.  A kernel
    is shut down only when it was already a suspect on the previous pass: a session whose watch
    event has not arrived yet, or a start racing this pass, never loses its kernel.  Kernels
    without the controller's tag (notebook users, SDK clients) are never touched.
    """
    owned_ids = set(owned)
    orphans = {k.id for k in await gateway.kernels() if is_controller_kernel_id(k.id)} - owned_ids
    collected = []
    for kernel_id in sorted(orphans & suspects):
        await gateway.shutdown_kernel(kernel_id)
        collected.append(kernel_id)
    return GarbageReport(collected, frozenset(orphans - suspects))
