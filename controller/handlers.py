"""The kopf handlers: each translates one event into a reconcile step and its outcome.

create/resume → :func:`~controller.reconcile.ensure_kernel`; spec update →
:func:`~controller.reconcile.apply_spec_change`; delete (kopf's finalizer) →
:func:`~controller.reconcile.release_kernel`; a timer per Ready session →
:func:`~controller.reconcile.check_kernel`; a background task started at startup →
:func:`~controller.reconcile.collect_garbage` over the ``session_kernels`` index.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import kopf
from prometheus_client import start_http_server

from jupyter_kernel_client import GatewayError, TransportError

from . import reconcile
from .gateway import GatewayClient
from .metrics import ControllerMetrics
from .reconcile import Outcome
from .settings import ControllerSettings, get_settings

GROUP, VERSION, PLURAL = "minisandbox.dev", "v1alpha1", "sandboxsessions"
FINALIZER = "minisandbox.dev/kernel-shutdown"

# Timer intervals are fixed when the handlers are registered, i.e. at import.
SETTINGS = get_settings()


@dataclass
class Runtime:
    """What the handlers share, kept in kopf's memo (created at operator startup)."""

    settings: ControllerSettings
    gateway: GatewayClient
    metrics: ControllerMetrics
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _runtime(memo: kopf.Memo) -> Runtime:
    runtime = memo.get("runtime")
    if not isinstance(runtime, Runtime):
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return runtime


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _apply(outcome: Outcome, body: kopf.Body, patch: kopf.Patch, runtime: Runtime) -> None:
    """Write the outcome into kopf's patch, post an event, then raise what kopf should know."""
    if outcome.status:
        patch.status.update(outcome.status)
    for key, value in outcome.annotations.items():
        patch.metadata.annotations[key] = value
    if outcome.action != "none":
        runtime.metrics.kernel_actions.labels(outcome.action).inc()
    _post_event(outcome, body)
    if outcome.permanent_error is not None:
        raise kopf.PermanentError(outcome.permanent_error)
    if outcome.retry_in is not None:
        raise kopf.TemporaryError(str(outcome.status.get("message")), delay=outcome.retry_in)


_WARNING_ACTIONS = frozenset({"waiting", "failed", "restarted"})
_NORMAL_ACTIONS = frozenset({"expired"})


def _post_event(outcome: Outcome, body: kopf.Body) -> None:
    """A Kubernetes Event for what a user would want in ``kubectl describe sbs``."""
    if outcome.action not in _WARNING_ACTIONS | _NORMAL_ACTIONS:
        return
    conditions = outcome.status.get("conditions") or [{}]
    reason = str(conditions[0].get("reason") or outcome.action.capitalize())
    message = str(outcome.status.get("message") or outcome.action)
    if outcome.action in _WARNING_ACTIONS:
        kopf.warn(body, reason=reason, message=message)
    else:
        kopf.info(body, reason=reason, message=message)


# --- operator lifecycle ---------------------------------------------------------------------


@kopf.on.startup()
async def configure(
    settings: kopf.OperatorSettings,
    memo: kopf.Memo,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **kwargs: Any,
) -> None:
    """Finalizer name, the shared gateway client, metrics and the GC task."""
    # kopf hands every index to activity handlers too, by the indexing function's name.
    session_kernels: kopf.Index[str, str] = kwargs["session_kernels"]
    settings.persistence.finalizer = FINALIZER
    # The last handled spec goes into status.kopf (the CRD preserves it) rather than an
    # annotation: kopf then writes one status patch per reconcile instead of two patches.
    settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(
        field="status.kopf.last-handled-configuration"
    )
    config = SETTINGS
    runtime = Runtime(
        settings=config,
        gateway=GatewayClient(config.gateway_config()),
        metrics=ControllerMetrics(),
    )
    if config.metrics_port:
        start_http_server(config.metrics_port, registry=runtime.metrics.registry)
    runtime.tasks.append(asyncio.create_task(_collect_garbage_forever(runtime, session_kernels)))
    memo["runtime"] = runtime
    logger.info("controller started; gateway %s", config.gateway_url)


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    runtime = memo.get("runtime")
    if isinstance(runtime, Runtime):
        for task in runtime.tasks:
            task.cancel()
        for task in runtime.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await runtime.gateway.close()


# --- sessions ----------------------------------------------------------------------------------


@kopf.index(GROUP, VERSION, PLURAL)
async def session_kernels(
    uid: str, namespace: str | None, name: str, status: kopf.Status, **_: Any
) -> dict[str, str] | None:
    """Kernel id → ``namespace/name`` of every session that may own a kernel (for the GC).

    Async so that kopf calls it in its event loop (a sync one would hop to a thread per event).
    """
    if status.get("phase") in reconcile.TERMINAL_PHASES:
        return None
    return {reconcile.derive_kernel_id(uid): f"{namespace}/{name}"}


Step = Callable[[reconcile.Event], Awaitable[Outcome]]


async def _run_step(
    name: str,
    step: Step,
    body: kopf.Body,
    meta: kopf.Meta,
    spec: Mapping[str, Any],
    status: kopf.Status,
    patch: kopf.Patch,
    memo: kopf.Memo,
) -> None:
    """Every handler's body: one reconcile step, timed and counted, its outcome applied."""
    runtime = _runtime(memo)
    with runtime.metrics.reconcile(name):
        event = reconcile.Event(meta, spec, status, runtime.gateway, runtime.settings, _now())
        _apply(await step(event), body, patch, runtime)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
async def ensure(
    body: kopf.Body,
    meta: kopf.Meta,
    spec: kopf.Spec,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Start the session's kernel, or find the one already started for it."""
    await _run_step("ensure", reconcile.ensure_kernel, body, meta, spec, status, patch, memo)


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def respec(
    body: kopf.Body,
    meta: kopf.Meta,
    old: Any,
    new: Any,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Apply a spec edit (new timeouts at once; new kernel name/env/resources relaunch)."""
    old_spec: Mapping[str, Any] = old or {}
    await _run_step(
        "update",
        lambda event: reconcile.apply_spec_change(event, old_spec),
        body,
        meta,
        new or {},
        status,
        patch,
        memo,
    )


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def release(
    body: kopf.Body,
    meta: kopf.Meta,
    spec: kopf.Spec,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Shut the kernel down before the object goes (kopf holds the finalizer until then)."""
    await _run_step("delete", reconcile.release_kernel, body, meta, spec, status, patch, memo)


def _is_ready(status: kopf.Status, meta: kopf.Meta, **_: Any) -> bool:
    return status.get("phase") == reconcile.READY and not meta.get("deletionTimestamp")


@kopf.timer(
    GROUP,
    VERSION,
    PLURAL,
    interval=SETTINGS.check_interval_seconds,
    initial_delay=SETTINGS.check_interval_seconds,
    when=_is_ready,
)
async def check(
    body: kopf.Body,
    meta: kopf.Meta,
    spec: kopf.Spec,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Dead kernel → restart or Failed; idle or too old → Expired; else refresh lastActivity."""
    await _run_step("check", reconcile.check_kernel, body, meta, spec, status, patch, memo)


# --- garbage collection --------------------------------------------------------------------


async def _collect_garbage_forever(runtime: Runtime, index: kopf.Index[str, str]) -> None:
    """Every GC interval, shut down controller kernels that no session in the index owns.

    kopf fills ``index`` from the initial listing before it runs any resource handler, and the
    first pass comes one full interval after startup; a kernel is collected only after two
    passes as an orphan (see :func:`~controller.reconcile.collect_garbage`).
    """
    logger = logging.getLogger("controller.gc")
    suspects: frozenset[str] = frozenset()
    while True:
        await asyncio.sleep(runtime.settings.gc_interval_seconds)
        try:
            with runtime.metrics.reconcile("gc"):
                report = await reconcile.collect_garbage(
                    runtime.gateway, list(index.keys()), suspects
                )
        except (TransportError, GatewayError) as exc:
            logger.warning("garbage collection skipped: gateway unavailable: %s", exc)
            continue
        suspects = report.suspects
        if report.collected:
            runtime.metrics.garbage_collected.inc(len(report.collected))
            logger.info("garbage-collected orphaned kernels: %s", ", ".join(report.collected))
