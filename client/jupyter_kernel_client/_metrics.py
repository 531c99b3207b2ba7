"""Prometheus instrumentation, shared by the sync session, the async session and the pools.

Metrics live once per registry (registering a name twice in one registry is an error), so
every session given the same registry reports into the same families.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from ._exceptions import ExecutionTimeoutError, KernelDiedError
from ._result import ExecutionResult
from ._session import GatewayKernelSession

# Round trips are milliseconds; executions of user code may take minutes.
_EXECUTION_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_START_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)

_lock = threading.Lock()
_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, KernelMetrics] = (
    weakref.WeakKeyDictionary()
)


class KernelMetrics:
    """The metric families; get the instance for a registry with :meth:`for_registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.executions = Counter(
            "jupyter_kernel_executions_total",
            "Executions by outcome (ok, error, aborted, timeout, kernel_died, failed).",
            ["kernel_name", "status"],
            registry=registry,
        )
        self.execution_duration = Histogram(
            "jupyter_kernel_execution_duration_seconds",
            "Time from sending the code to the kernel going idle.",
            ["kernel_name"],
            buckets=_EXECUTION_BUCKETS,
            registry=registry,
        )
        self.start_duration = Histogram(
            "jupyter_kernel_start_duration_seconds",
            "Time from requesting a kernel to its first answer.",
            ["kernel_name"],
            buckets=_START_BUCKETS,
            registry=registry,
        )
        self.active_sessions = Gauge(
            "jupyter_kernel_active_sessions",
            "Sessions started and not yet closed.",
            ["kernel_name"],
            registry=registry,
        )
        self.errors = Counter(
            "jupyter_kernel_client_errors_total",
            "Client errors raised, by exception class.",
            ["kernel_name", "error_type"],
            registry=registry,
        )
        self.pool_acquire_duration = Histogram(
            "jupyter_kernel_pool_acquire_duration_seconds",
            "Time to acquire a kernel from a pool (waiting and starting included).",
            ["kernel_name"],
            buckets=_EXECUTION_BUCKETS,
            registry=registry,
        )

    @classmethod
    def for_registry(cls, registry: CollectorRegistry | None = None) -> KernelMetrics:
        registry = REGISTRY if registry is None else registry
        with _lock:
            metrics = _by_registry.get(registry)
            if metrics is None:
                metrics = _by_registry[registry] = cls(registry)
            return metrics

    # --- the instrumentation interface that SessionBase and the pool call ----------------

    def started(self, kernel_name: str, seconds: float) -> None:
        self.start_duration.labels(kernel_name).observe(seconds)
        self.active_sessions.labels(kernel_name).inc()

    def closed(self, kernel_name: str) -> None:
        self.active_sessions.labels(kernel_name).dec()

    def executed(self, kernel_name: str, result: ExecutionResult) -> None:
        self.executions.labels(kernel_name, result.status).inc()
        self.execution_duration.labels(kernel_name).observe(result.duration)

    def failed(self, kernel_name: str, operation: str, error: BaseException) -> None:
        if operation == "execute":
            self.executions.labels(kernel_name, _failure_status(error)).inc()
        self.errors.labels(kernel_name, type(error).__name__).inc()

    def acquired(self, kernel_name: str, seconds: float) -> None:
        self.pool_acquire_duration.labels(kernel_name).observe(seconds)


def _failure_status(error: BaseException) -> str:
    if isinstance(error, ExecutionTimeoutError):
        return "timeout"
    if isinstance(error, KernelDiedError):
        return "kernel_died"
    return "failed"


class PrometheusGatewayKernelSession(GatewayKernelSession):
    """``GatewayKernelSession(..., metrics=KernelMetrics.for_registry(registry))``, under the
    seed's name; any other argument is :class:`GatewayKernelSession`'s.

    Any session (sync or async) and both pools take ``metrics=`` directly, combinable with
    ``files=``.
    """

    def __init__(
        self, *args: Any, registry: CollectorRegistry | None = None, **kwargs: Any
    ) -> None:
        kwargs.setdefault("metrics", KernelMetrics.for_registry(registry))
        super().__init__(*args, **kwargs)
