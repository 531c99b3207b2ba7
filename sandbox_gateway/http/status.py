"""``GET {base_url}/api/sandbox/status``: the gateway's state as one caller may see it.

For ``mini-sandbox status``: the versions the gateway runs, the caller's kernels and the
gateway's against their caps, and the warm pool's fill.  Authenticated as every API route is
(``admission.tenants``: a tenant's token, or Enterprise Gateway's single ``EG_AUTH_TOKEN``; 401
otherwise), and open to every tenant, not only a ``metrics`` one: it answers counts only, never a
kernel's id or owner, and the one figure about other tenants, the total, is what a start refused
at the total cap already tells anyone (403 "N of N kernels in use").

Every figure is read where admission and the pool keep it, never counted a second time:
``limits.KernelLedger.usage`` (what a start is checked against: pooled kernels and starts in
progress included) and ``pool.manager.fill``.  Whose kernels are "yours":

* with tenants, the tenant's (a tenant is the ``KERNEL_USERNAME`` of the kernels it starts);
* without, every client is one tenant, but the per-user cap still counts per ``KERNEL_USERNAME``:
  ``?username=<name>`` names the one the caller starts kernels as (the Python client always sends
  one), and without it the user a start naming none counts as (Enterprise Gateway's own process
  user).  With tenants ``username`` is ignored: the token alone says who the caller is.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any, Final

from sandbox_gateway.admission import limits
from sandbox_gateway.admission.tenants import Tenant
from sandbox_gateway.pool import manager as pool

ROUTE: Final = "/api/sandbox/status"
DISTRIBUTION: Final = "mini-jupyter-sandbox"


def distribution_version() -> str:
    """The installed mini-jupyter-sandbox's version; "unknown" when run from a source tree."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def status_body(
    *,
    versions: tuple[str, str],
    tenant: Tenant | None,
    usage: limits.Usage,
    fill: dict[str, pool.Fill],
) -> dict[str, Any]:
    """The JSON answer (the contract ``docs/gateway.md`` documents)."""
    return {
        "version": versions[0],
        "enterprise_gateway": versions[1],
        "tenant": None if tenant is None else tenant.name,
        "kernels": {
            "yours": usage.user,
            "yours_limit": usage.user_limit,
            "total": usage.total,
            "total_limit": usage.total_limit,
        },
        "pool": {
            name: {"ready": f.ready, "starting": f.starting, "target": f.target}
            for name, f in fill.items()
        },
    }


def _caller(handler: Any) -> tuple[Tenant | None, str]:
    """The caller's tenant (None without tenants) and the user its kernels are counted under."""
    tenant: Tenant | None = getattr(handler, "sandbox_tenant", None)
    if tenant is not None:
        return tenant, tenant.name
    named = handler.get_argument("username", None)
    if named is None:
        from enterprise_gateway.services.sessions.kernelsessionmanager import (
            KernelSessionManager,
        )

        # The user limits.py counts a start without KERNEL_USERNAME as (EG's own fallback).
        return None, str(KernelSessionManager.get_kernel_username(env={}))
    if not limits.USERNAME_PATTERN.fullmatch(named):
        raise limits.http_error(
            400,
            {
                "reason": "Bad Request",
                "message": "username must be a KERNEL_USERNAME: 1 to 64 letters, digits "
                "and . _ @ -",
            },
        )
    return None, str(named)


def apply() -> None:
    """Serve the route among Enterprise Gateway's (after ``admission.limits.apply``)."""
    from enterprise_gateway._version import __version__ as eg_version
    from enterprise_gateway.enterprisegatewayapp import EnterpriseGatewayApp
    from enterprise_gateway.mixins import CORSMixin, JSONErrorsMixin, TokenAuthorizationMixin
    from jupyter_server.base.handlers import APIHandler
    from jupyter_server.utils import url_path_join

    if limits.LEDGER is None:
        raise RuntimeError("sandbox_gateway.http.status needs admission.limits applied first")
    ledger = limits.LEDGER
    # Fixed while the gateway runs: read once.
    versions = (distribution_version(), str(eg_version))

    # Enterprise Gateway's own API handlers' bases: its token rule (patched by the tenants), CORS,
    # JSON errors, and jupyter_server's Host and Origin checks.
    class StatusHandler(TokenAuthorizationMixin, CORSMixin, JSONErrorsMixin, APIHandler):
        """The caller's and the gateway's kernel counts, the pool's fill, the versions."""

        def get(self) -> None:
            tenant, user = _caller(self)
            live = set(self.kernel_manager.list_kernel_ids())
            body = status_body(
                versions=versions,
                tenant=tenant,
                usage=ledger.usage(user, live),
                fill=pool.fill(),
            )
            self.set_header("Cache-Control", "no-store")
            # A dict: tornado writes it as JSON; APIHandler's finish then runs as for any route.
            self.write(body)

    original = EnterpriseGatewayApp._create_request_handlers

    def create_request_handlers(self: Any) -> list[tuple[Any, ...]]:
        handlers: list[tuple[Any, ...]] = original(self)
        # First: Enterprise Gateway's list ends with a catch-all 404 handler.
        return [(url_path_join("/", self.base_url, ROUTE), StatusHandler), *handlers]

    EnterpriseGatewayApp._create_request_handlers = create_request_handlers  # type: ignore[method-assign]
