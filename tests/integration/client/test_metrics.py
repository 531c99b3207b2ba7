"""Prometheus metrics of real executions, scraped over HTTP as Prometheus would."""

from __future__ import annotations

import pytest
import requests
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from jupyter_kernel_client import (
    AsyncGatewayKernelSession,
    ExecutionTimeoutError,
    KernelMetrics,
    KernelSessionPool,
    PrometheusGatewayKernelSession,
)
from testkit.gateway import Gateway, free_port


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def metrics_port() -> tuple[CollectorRegistry, int]:
    registry = CollectorRegistry()
    port = free_port()
    start_http_server(port, addr="127.0.0.1", registry=registry)
    return registry, port


def test_scrape_shows_counts_and_histograms_of_the_executions(
    gateway: Gateway, metrics_port: tuple[CollectorRegistry, int]
) -> None:
    registry, port = metrics_port
    kernel = {"kernel_name": "python3"}
    with PrometheusGatewayKernelSession(
        gateway.http, gateway.ws, "python3", registry=registry
    ) as session:
        for _ in range(3):
            session.execute("1 + 1")
        session.execute("1 / 0")
        with pytest.raises(ExecutionTimeoutError):
            session.execute("import time; time.sleep(30)", timeout=0.5)
        during = scrape(port)
    after = scrape(port)

    assert value(during, "jupyter_kernel_executions_total", status="ok", **kernel) == 3
    assert value(during, "jupyter_kernel_executions_total", status="error", **kernel) == 1
    assert value(during, "jupyter_kernel_executions_total", status="timeout", **kernel) == 1
    assert value(during, "jupyter_kernel_execution_duration_seconds_count", **kernel) == 4
    assert value(during, "jupyter_kernel_execution_duration_seconds_sum", **kernel) > 0
    assert value(during, "jupyter_kernel_start_duration_seconds_count", **kernel) == 1
    assert value(during, "jupyter_kernel_active_sessions", **kernel) == 1
    assert value(after, "jupyter_kernel_active_sessions", **kernel) == 0
    errors = value(
        during, "jupyter_kernel_client_errors_total", error_type="ExecutionTimeoutError", **kernel
    )
    assert errors == 1


async def test_async_session_and_pool_report_into_the_same_families(gateway: Gateway) -> None:
    registry = CollectorRegistry()
    metrics = KernelMetrics.for_registry(registry)
    assert KernelMetrics.for_registry(registry) is metrics  # one set of families per registry
    async with AsyncGatewayKernelSession(
        gateway.http, gateway.ws, "python3", metrics=metrics
    ) as session:
        await session.execute("2 + 2")
    with (
        # reuse=True: the pool starts its one kernel and no replacement after the release.
        KernelSessionPool(
            gateway.http,
            gateway.ws,
            "python3",
            size=1,
            reuse=True,
            health_check_interval=None,
            metrics=metrics,
        ) as pool,
        pool.session() as pooled,
    ):
        pooled.execute("3 + 3")

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"kernel_name": "python3", **labels})

    assert sample("jupyter_kernel_executions_total", status="ok") == 2
    assert sample("jupyter_kernel_start_duration_seconds_count") == 2
    assert sample("jupyter_kernel_pool_acquire_duration_seconds_count") == 1
    assert sample("jupyter_kernel_active_sessions") == 0
