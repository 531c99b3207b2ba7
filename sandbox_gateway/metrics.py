"""The gateway's Prometheus metrics: the warm pool's series, and ``GET /metrics``, which serves
them beside jupyter_server's own (Prometheus text format; the API's token when one is set, and
only a tenant with the ``metrics`` right when the gateway has tenants)."""

from __future__ import annotations

from collections.abc import Mapping
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


def port_from_env(env: Mapping[str, str]) -> int | None:
    """``SANDBOX_METRICS_PORT``: serve ``/metrics`` on this port alone (None: on the API port)."""
    text = env.get("SANDBOX_METRICS_PORT", "").strip()
    if not text:
        return None
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise SystemExit(
            f"sandbox gateway: invalid setting: SANDBOX_METRICS_PORT must be a port number "
            f"(1-65535), got {text!r}"
        )
    return int(text)


def serve(port: int | None = None) -> None:
    """Serve ``/metrics``: among Enterprise Gateway's routes, or, with ``port``, on that port
    alone, so that a network policy can open the metrics to a monitoring namespace without
    opening the kernel API (the API port then answers ``/metrics`` with 404)."""
    from enterprise_gateway.enterprisegatewayapp import EnterpriseGatewayApp
    from enterprise_gateway.mixins import TokenAuthorizationMixin
    from jupyter_server.utils import url_path_join
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
    from tornado import httpserver, web

    class MetricsHandler(TokenAuthorizationMixin, web.RequestHandler):
        """Prometheus text format: the pool's metrics and jupyter_server's."""

        def get(self) -> None:
            # With tenants (admission.tenants), only a "metrics" tenant reads them: they count
            # every tenant's kernels.
            tenant = getattr(self, "sandbox_tenant", None)
            if tenant is not None and not tenant.metrics:
                raise web.HTTPError(404)
            self.set_header("Content-Type", CONTENT_TYPE_LATEST)
            self.finish(generate_latest(REGISTRY))

    if port is None:
        original = EnterpriseGatewayApp._create_request_handlers

        def create_request_handlers(self: Any) -> list[tuple[Any, ...]]:
            handlers: list[tuple[Any, ...]] = original(self)
            # First: Enterprise Gateway's list ends with a catch-all 404 handler.
            return [(url_path_join("/", self.base_url, "/metrics"), MetricsHandler), *handlers]

        EnterpriseGatewayApp._create_request_handlers = create_request_handlers  # type: ignore[method-assign]
        return

    original_init = EnterpriseGatewayApp.init_http_server

    def init_http_server(self: Any) -> None:
        original_init(self)
        # The API's token rule, whichever applies: EG's single token or the tenants'.
        app = web.Application(
            [(url_path_join("/", self.base_url, "/metrics"), MetricsHandler)],
            eg_auth_token=self.web_app.settings.get("eg_auth_token"),
        )
        self.sandbox_metrics_server = httpserver.HTTPServer(app)
        self.sandbox_metrics_server.listen(port, self.ip)
        self.log.info("sandbox gateway: /metrics on port %d only", port)

    EnterpriseGatewayApp.init_http_server = init_http_server  # type: ignore[method-assign]
