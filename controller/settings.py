"""The controller's settings, read from ``SANDBOX_*`` environment variables (pydantic-settings).

The chart sets them on the controller's Deployment; tests and the benchmark set them on the
controller process.  Every field names its variable in its docstring.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from jupyter_kernel_client import GatewayConfig
from jupyter_kernel_client.protocol import ws_of

_TENANT: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
"""A gateway tenant's name (a KERNEL_USERNAME the gateway accepts)."""


class ControllerSettings(BaseSettings):
    """How the SandboxSession controller reaches the gateway and looks after kernels."""

    model_config = SettingsConfigDict(
        env_prefix="SANDBOX_", extra="ignore", frozen=True, use_attribute_docstrings=True
    )

    gateway_url: str = "http://127.0.0.1:8889"
    """SANDBOX_GATEWAY_URL: the gateway's HTTP base the controller calls (in-cluster Service)."""

    public_gateway_url: str = ""
    """SANDBOX_PUBLIC_GATEWAY_URL: the HTTP base written to ``status.gatewayUrl`` for clients
    (e.g. the ingress); empty means ``gateway_url``."""

    public_websocket_url: str = ""
    """SANDBOX_PUBLIC_WEBSOCKET_URL: the websocket base written to ``status.websocketUrl`` (what a
    client passes as ``gateway_ws`` with ``kernel_id=status.kernelId``); empty means the
    ``ws``/``wss`` twin of ``public_gateway_url``."""

    gateway_auth_token: SecretStr | None = None
    """SANDBOX_GATEWAY_AUTH_TOKEN: sent as ``Authorization: token …`` when the gateway has
    ``EG_AUTH_TOKEN`` set."""

    namespace_tenants: dict[str, str] = Field(default_factory=dict)
    """SANDBOX_NAMESPACE_TENANTS: JSON object namespace -> gateway tenant that owns the kernels
    of that namespace's sessions (sent as ``KERNEL_USERNAME``; only a ``delegate`` tenant's
    token may name another owner).  Empty: kernels are the controller's own.  A session in a
    namespace the map lacks then fails for good."""

    request_timeout_seconds: float = Field(default=60.0, gt=0)
    """SANDBOX_REQUEST_TIMEOUT_SECONDS: limit of one gateway request; a kernel start waits for the
    kernel's pod, so this bounds the start too."""

    default_kernel_name: str = Field(default="python3", min_length=1)
    """SANDBOX_DEFAULT_KERNEL_NAME: kernelspec of sessions whose spec names none."""

    check_interval_seconds: float = Field(default=30.0, gt=0)
    """SANDBOX_CHECK_INTERVAL_SECONDS: period of each session's check (dead kernel, idle,
    lifetime).  Expiry is therefore detected up to this late."""

    default_idle_timeout_seconds: int = Field(default=0, ge=0)
    """SANDBOX_DEFAULT_IDLE_TIMEOUT_SECONDS: idle timeout of sessions whose spec sets none;
    0 means such sessions never expire for idleness."""

    max_restarts: int = Field(default=3, ge=0)
    """SANDBOX_MAX_RESTARTS: restart policy for a kernel found dead or gone: restart it up to
    this many times over the session's life, then phase Failed; 0 means fail at once."""

    retry_delay_seconds: float = Field(default=5.0, gt=0)
    """SANDBOX_RETRY_DELAY_SECONDS: delay before kopf retries a handler after a temporary error
    (gateway unreachable or 5xx)."""

    gc_interval_seconds: float = Field(default=300.0, gt=0)
    """SANDBOX_GC_INTERVAL_SECONDS: period of the garbage collection of controller kernels that
    belong to no session.  A kernel is collected only if it was orphaned on two consecutive
    passes, so a kernel lives at least this long after its session is gone."""

    metrics_port: int = Field(default=8000, ge=0, le=65535)
    """SANDBOX_METRICS_PORT: port of the Prometheus ``/metrics`` endpoint; 0 disables it."""

    @field_validator("gateway_url", "public_gateway_url")
    @classmethod
    def _http_base(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    @field_validator("public_websocket_url")
    @classmethod
    def _ws_base(cls, value: str) -> str:
        if value and not value.startswith(("ws://", "wss://")):
            raise ValueError(f"must start with ws:// or wss://, got {value!r}")
        return value.rstrip("/")

    @field_validator("namespace_tenants")
    @classmethod
    def _tenant_names(cls, value: dict[str, str]) -> dict[str, str]:
        for namespace, tenant in value.items():
            if not _TENANT.fullmatch(tenant):
                raise ValueError(
                    f"tenant {tenant!r} of namespace {namespace!r} must be 1 to 64 letters, "
                    "digits and . _ @ -, starting with a letter or digit"
                )
        return value

    @model_validator(mode="after")
    def _derive_public_urls(self) -> ControllerSettings:
        # frozen model: fill the derived defaults through object.__setattr__ once.
        if not self.public_gateway_url:
            object.__setattr__(self, "public_gateway_url", self.gateway_url)
        if not self.public_websocket_url:
            object.__setattr__(self, "public_websocket_url", ws_of(self.public_gateway_url))
        return self

    @property
    def gateway_ws_url(self) -> str:
        """The websocket twin of ``gateway_url``."""
        return ws_of(self.gateway_url)

    def gateway_config(self) -> GatewayConfig:
        """The client configuration the controller talks to the gateway with.

        A kernel start waits for the kernel's pod, so ``request_timeout_seconds`` bounds it
        too; failed starts are retried by kopf (``retry_delay_seconds``), not by the client.
        """
        token = self.gateway_auth_token
        return GatewayConfig(
            self.gateway_url,
            kernel_name=self.default_kernel_name,
            startup_timeout=self.request_timeout_seconds,
            request_timeout=self.request_timeout_seconds,
            max_retries=0,
            token=token.get_secret_value() if token else None,
        )


@lru_cache(maxsize=1)
def get_settings() -> ControllerSettings:
    """The process's settings, read once from the environment."""
    return ControllerSettings()
