"""The gateway's Prometheus metrics: the warm pool's series, and ``GET /metrics``, which serves
them beside jupyter_server's own (Prometheus text format; the API's token when one is set, and
only a tenant with the ``metrics`` right when the gateway has tenants)."""

from __future__ import annotations

from typing import Any


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.kernels = Gauge(
            "sandbox_pool_kernels", "Kernels in the warm pool", ["kernelspec", "state"]
        )
        self.target = Gauge("sandbox_pool_target", "Configured pool size", ["kernelspec"])
        self.starts = Counter(
            "sandbox_kernel_starts",
            "Kernel start requests, served warm (from the pool) or cold, with the reason",
            ["kernelspec", "source", "reason"],
        )
        self.start_seconds = Histogram(
            "sandbox_kernel_start_seconds",
            "Time to answer a start request in the gateway",
            ["kernelspec", "source"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.refill_failures = Counter(
            "sandbox_pool_refill_failures", "Pool kernels that failed to start", ["kernelspec"]
        )
        self.refill_failing = Gauge(
            "sandbox_pool_refill_failing",
            "1 while the pool of a kernelspec backs off after failed starts",
            ["kernelspec"],
        )


def serve() -> None:
    """Add ``/metrics`` to Enterprise Gateway's routes."""
    from enterprise_gateway.enterprisegatewayapp import EnterpriseGatewayApp
    from enterprise_gateway.mixins import TokenAuthorizationMixin
    from jupyter_server.utils import url_path_join
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
    from tornado import web

    class MetricsHandler(TokenAuthorizationMixin, web.RequestHandler):
        """Prometheus text format: the pool's metrics and jupyter_server's."""

        def get(self) -> None:
            # With tenants (sandbox_tenants), only a "metrics" tenant reads them: they count
            # every tenant's kernels.
            tenant = getattr(self, "sandbox_tenant", None)
            if tenant is not None and not tenant.metrics:
                raise web.HTTPError(404)
            self.set_header("Content-Type", CONTENT_TYPE_LATEST)
            self.finish(generate_latest(REGISTRY))

    original = EnterpriseGatewayApp._create_request_handlers

    def create_request_handlers(self: Any) -> list[tuple[Any, ...]]:
        handlers: list[tuple[Any, ...]] = original(self)
        # First: Enterprise Gateway's list ends with a catch-all 404 handler.
        return [(url_path_join("/", self.base_url, "/metrics"), MetricsHandler), *handlers]

    EnterpriseGatewayApp._create_request_handlers = create_request_handlers
