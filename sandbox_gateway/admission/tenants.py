"""Tenants: who a request is, from its API token, and which kernels are theirs.

Loaded by the gateway's config file (``apply()``) after ``admission.limits``.  Off unless
``SANDBOX_TENANTS_FILE`` names a file; without it the gateway keeps Enterprise Gateway's single
optional ``EG_AUTH_TOKEN`` and every client is the same tenant (that token is then compared in
constant time too: Enterprise Gateway compared it with ``!=``).

The tenants file (a secret of the deployment: mounted, never in git) is JSON::

    {"tenants": {
        "alice":      {"token": "<random, >= 16 characters>", "max_kernels": 4},
        "notebook":   {"token": "..."},
        "controller": {"token": "...", "delegate": true},
        "prometheus": {"token": "...", "metrics": true}
    }}

A tenant's name is a ``KERNEL_USERNAME`` (``limits.USERNAME_PATTERN``); tokens are
distinct.  ``max_kernels`` caps that tenant's kernels (default ``SANDBOX_MAX_KERNELS_PER_USER``).

Identity
    Every request carries its token as Enterprise Gateway's do (``Authorization: token <t>``, or
    ``?token=`` where a websocket client cannot set headers).  No token, or one of no tenant,
    answers **401** before any route runs, websocket upgrades included.  The token is found by its
    SHA-256 (a dict look-up, whatever the number of tenants) and then compared in constant time,
    so neither step tells an attacker how much of a guess was right.

Ownership
    A kernel belongs to the tenant that started it: the gateway sets the start request's
    ``KERNEL_USERNAME`` to the tenant's name, whatever the client sent, and Enterprise Gateway
    keeps that in the kernel's launch arguments (persisted with its session, so ownership survives
    a gateway restart and a kernel restart).  The per-user kernel cap is therefore a per-tenant
    cap.  ``GET /api/kernels`` lists the tenant's kernels only; every route and websocket of
    another tenant's kernel answers exactly what an unknown id answers (404 "Kernel does not
    exist"), so ids neither leak nor can be probed.
    A ``delegate`` tenant (the SandboxSession controller) may start a kernel on behalf of another
    tenant by naming it in ``KERNEL_USERNAME``, and may drive every kernel; the only other way to
    act on a kernel is to own it.  A ``metrics`` tenant may read ``/metrics``, which answers 404
    to everyone else: its counts describe every tenant's use.
    The sessions API (``/api/sessions``) answers 404: its handlers start kernels with the gateway's
    own environment, outside the start checks, and no client of this gateway uses it (the notebook
    keeps its sessions itself).

Bad settings stop the gateway with a message (``SystemExit``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from sandbox_gateway.admission import limits

MIN_TOKEN_LENGTH: Final = 16
_TENANT_KEYS: Final = frozenset({"token", "max_kernels", "delegate", "metrics"})


class SettingsError(ValueError):
    """The tenants file is invalid; the gateway stops with this message."""


@dataclass(frozen=True)
class Tenant:
    name: str
    max_kernels: int | None = None
    delegate: bool = False
    """May start kernels for another tenant and drive every kernel (the controller)."""
    metrics: bool = False
    """May read ``/metrics``."""


@dataclass(frozen=True)
class Tenants:
    by_name: Mapping[str, Tenant]
    _by_digest: Mapping[bytes, tuple[bytes, Tenant]]

    @classmethod
    def parse(cls, text: str, source: str = "the tenants file") -> Tenants:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SettingsError(f"{source} is not JSON: {exc}") from None
        entries = data.get("tenants") if isinstance(data, dict) else None
        if not isinstance(entries, dict) or not entries:
            raise SettingsError(f'{source} must be a JSON object {{"tenants": {{name: {{...}}}}}}')
        by_name: dict[str, Tenant] = {}
        by_digest: dict[bytes, tuple[bytes, Tenant]] = {}
        for name, entry in entries.items():
            tenant, token = _tenant(name, entry, source)
            digest = hashlib.sha256(token).digest()
            if digest in by_digest:
                raise SettingsError(
                    f"{source}: tenants {by_digest[digest][1].name!r} and {name!r} share a token"
                )
            by_name[name] = tenant
            by_digest[digest] = (token, tenant)
        return cls(by_name, by_digest)

    @classmethod
    def load(cls, path: str) -> Tenants:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"cannot read SANDBOX_TENANTS_FILE {path!r}: {exc}") from None
        return cls.parse(text, f"SANDBOX_TENANTS_FILE {path!r}")

    def identify(self, token: str | None) -> Tenant | None:
        """The tenant whose token this is, or None."""
        if not token:
            return None
        presented = token.encode("utf-8", "surrogateescape")
        entry = self._by_digest.get(hashlib.sha256(presented).digest())
        if entry is None or not hmac.compare_digest(entry[0], presented):
            return None
        return entry[1]


def _tenant(name: Any, entry: Any, source: str) -> tuple[Tenant, bytes]:
    if not isinstance(name, str) or not limits.USERNAME_PATTERN.fullmatch(name):
        raise SettingsError(
            f"{source}: tenant name {name!r} must be 1 to 64 letters, digits and . _ @ -"
        )
    if not isinstance(entry, dict):
        raise SettingsError(f"{source}: tenant {name!r} must be an object")
    unknown = sorted(set(entry) - _TENANT_KEYS)
    if unknown:
        raise SettingsError(f"{source}: tenant {name!r} has unknown keys {unknown}")
    token = entry.get("token")
    if not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH or token != token.strip():
        raise SettingsError(
            f"{source}: tenant {name!r} needs a token of at least {MIN_TOKEN_LENGTH} characters "
            "without surrounding spaces"
        )
    max_kernels = entry.get("max_kernels")
    if max_kernels is not None and (
        not isinstance(max_kernels, int) or isinstance(max_kernels, bool) or max_kernels < 1
    ):
        raise SettingsError(f"{source}: tenant {name!r}: max_kernels must be a whole number >= 1")
    flags = {key: entry.get(key, False) for key in ("delegate", "metrics")}
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise SettingsError(f"{source}: tenant {name!r}: {key} must be true or false")
    return Tenant(name, max_kernels, **flags), token.encode("utf-8")


def owner(km: Any) -> str | None:
    """The tenant a kernel belongs to: the ``KERNEL_USERNAME`` it was launched with."""
    env = (getattr(km, "_launch_args", None) or {}).get("env") or {}
    user = env.get("KERNEL_USERNAME")
    return user if isinstance(user, str) else None


def may_use(tenant: Tenant, km: Any) -> bool:
    return tenant.delegate or owner(km) == tenant.name


# --- Enterprise Gateway patches ------------------------------------------------------------------

_BEARER_PREFIXES: Final = ("token ", "Token ")


def _presented_token(handler: Any) -> str | None:
    header = handler.request.headers.get("Authorization", "")
    for prefix in _BEARER_PREFIXES:
        if header.startswith(prefix):
            return str(header[len(prefix) :].strip())
    token = handler.get_argument("token", None)
    return str(token) if token is not None else None


def _unauthorized() -> Exception:
    """The 401 of a request without a valid token, tenants or not."""
    return limits.http_error(
        401,
        {
            "reason": "Unauthorized",
            "message": "a valid API token is required (Authorization: token <token>)",
        },
    )


def _unknown_kernel(kernel_id: str) -> Exception:
    from tornado import web

    # Word for word what jupyter_server answers for an id it does not have.
    return web.HTTPError(404, "Kernel does not exist: %s" % kernel_id)  # noqa: UP031


def _authenticate(tenants: Tenants) -> None:
    from enterprise_gateway.mixins import TokenAuthorizationMixin

    original_prepare = TokenAuthorizationMixin.prepare

    def prepare(self: Any) -> Any:
        if self.request.method == "OPTIONS":  # CORS preflight: carries no credentials
            return original_prepare(self)
        tenant = tenants.identify(_presented_token(self))
        if tenant is None:
            raise _unauthorized()
        self.sandbox_tenant = tenant
        kernel_id = self.path_kwargs.get("kernel_id")
        if kernel_id is not None:
            km = self.kernel_manager._kernels.get(kernel_id)
            if km is not None and not may_use(tenant, km):
                raise _unknown_kernel(kernel_id)
        return original_prepare(self)

    TokenAuthorizationMixin.prepare = prepare  # type: ignore[method-assign]


def _single_token_in_constant_time() -> None:
    from enterprise_gateway.mixins import TokenAuthorizationMixin

    original_prepare = TokenAuthorizationMixin.prepare

    def prepare(self: Any) -> Any:
        expected = self.settings.get("eg_auth_token")
        if expected and self.request.method != "OPTIONS":
            presented = (_presented_token(self) or "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(presented, str(expected).encode("utf-8")):
                raise _unauthorized()
        # Checked: Enterprise Gateway's own comparison then passes, and runs the rest of prepare.
        return original_prepare(self)

    TokenAuthorizationMixin.prepare = prepare  # type: ignore[method-assign]


def _own_kernels(tenants: Tenants) -> None:
    from enterprise_gateway.services.kernels.handlers import MainKernelHandler
    from jupyter_server.services.kernels.handlers import json_default  # type: ignore[attr-defined]
    from jupyter_server.utils import ensure_async
    from tornado import web

    original_post: Callable[..., Any] = MainKernelHandler.post

    async def post(self: Any) -> Any:
        tenant: Tenant = self.sandbox_tenant
        model = self.get_json_body()  # malformed JSON is already a 400 here
        if model is None:
            model = {}
        if not isinstance(model, dict) or not isinstance(model.setdefault("env", {}), dict):
            return await original_post(self)  # refused there, with the reason
        env = model["env"]
        asked = env.get("KERNEL_USERNAME")
        if tenant.delegate and asked is not None:
            if asked not in tenants.by_name:
                raise limits.http_error(
                    400,
                    {"reason": "Bad Request", "message": f"no tenant named {asked!r}"[:200]},
                )
        else:
            env["KERNEL_USERNAME"] = tenant.name
        self.request.body = json.dumps(model).encode()
        return await original_post(self)

    MainKernelHandler.post = post  # type: ignore[method-assign]

    async def get(self: Any) -> None:
        if not self.settings.get("eg_list_kernels"):
            raise web.HTTPError(403, "Forbidden")  # EG's answer while listing is off
        tenant: Tenant = self.sandbox_tenant
        km = self.kernel_manager
        models = []
        for kernel_id, kernel in list(km._kernels.items()):
            if may_use(tenant, kernel):
                try:
                    models.append(await ensure_async(km.kernel_model(kernel_id)))
                except web.HTTPError:
                    continue  # gone meanwhile
        self.finish(json.dumps(models, default=json_default))

    MainKernelHandler.get = get  # type: ignore[method-assign]


def _no_sessions_api() -> None:
    from enterprise_gateway.enterprisegatewayapp import EnterpriseGatewayApp

    original = EnterpriseGatewayApp._create_request_handlers

    def create_request_handlers(self: Any) -> list[tuple[Any, ...]]:
        handlers: list[tuple[Any, ...]] = original(self)
        # Left to Enterprise Gateway's catch-all handler: 404.
        return [h for h in handlers if "/api/sessions" not in str(h[0])]

    EnterpriseGatewayApp._create_request_handlers = create_request_handlers  # type: ignore[method-assign]


def apply(env: Mapping[str, str] | None = None) -> Tenants | None:
    """Read the tenants file (exit with a message if it is invalid) and patch the gateway."""
    env = os.environ if env is None else env
    path = env.get("SANDBOX_TENANTS_FILE", "").strip()
    if not path:
        _single_token_in_constant_time()
        return None
    if env.get("EG_AUTH_TOKEN", "").strip():
        raise SystemExit(
            "sandbox gateway: invalid setting: EG_AUTH_TOKEN and SANDBOX_TENANTS_FILE are both "
            "set; with tenants every token is a tenant's (unset EG_AUTH_TOKEN)"
        )
    try:
        tenants = Tenants.load(path)
    except SettingsError as exc:
        raise SystemExit(f"sandbox gateway: invalid setting: {exc}") from None
    ledger = limits.LEDGER
    if ledger is not None:
        for tenant in tenants.by_name.values():
            if tenant.max_kernels is not None:
                ledger.user_limits[tenant.name] = tenant.max_kernels
    _authenticate(tenants)
    _own_kernels(tenants)
    _no_sessions_api()
    return tenants
