"""Prometheus metrics of the controller; the registry is injectable (tests pass their own)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import kopf
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram


class ControllerMetrics:
    """Reconcile counts and durations per handler, kernel actions, garbage collection."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else REGISTRY
        self.reconciles = Counter(
            "sandbox_controller_reconciles",
            "Reconcile runs by handler and outcome (ok, temporary_error, permanent_error, error).",
            ["handler", "outcome"],
            registry=self.registry,
        )
        self.reconcile_duration = Histogram(
            "sandbox_controller_reconcile_duration_seconds",
            "Duration of one reconcile run, gateway calls included.",
            ["handler"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.kernel_actions = Counter(
            "sandbox_controller_kernel_actions",
            "What reconciles did to kernels (started, adopted, restarted, expired, failed, "
            "released).",
            ["action"],
            registry=self.registry,
        )
        self.garbage_collected = Counter(
            "sandbox_controller_garbage_collected_kernels",
            "Controller kernels shut down because no session owned them.",
            registry=self.registry,
        )

    @contextmanager
    def reconcile(self, handler: str) -> Iterator[None]:
        """Time one run; count it under the outcome of the exception it raises, if any."""
        started = time.perf_counter()
        outcome = "ok"
        try:
            yield
        except kopf.TemporaryError:
            outcome = "temporary_error"
            raise
        except kopf.PermanentError:
            outcome = "permanent_error"
            raise
        except Exception:
            outcome = "error"
            raise
        finally:
            self.reconcile_duration.labels(handler).observe(time.perf_counter() - started)
            self.reconciles.labels(handler, outcome).inc()
