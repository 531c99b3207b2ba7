"""The configuration of a gateway connection and of a file server: validated once, immutable.

One :class:`GatewayConfig` is shared by the sync session, the async session, both pools and
the SandboxSession controller; the seed's constructor arguments
(``GatewayKernelSession(gateway_http, gateway_ws, kernel_name, ...)``) are turned into one by
:func:`coerce_config`.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

MIB: Final = 1024 * 1024
DEFAULT_MAX_OUTPUT_BYTES: Final = 64 * MIB
MESSAGE_ENVELOPE: Final = 1 * MIB
"""Room above ``max_output_bytes`` for one message's header, metadata and JSON escaping."""
TOKEN_ENV: Final = "JUPYTER_GATEWAY_AUTH_TOKEN"
EGRESS_ENV: Final = "KERNEL_EGRESS_ALLOW"


@dataclass(frozen=True)
class GatewayConfig:
    """Where a gateway is, which kernel to start there and how patiently.

    ``gateway_ws`` defaults to the ``ws``/``wss`` twin of ``gateway_http``; ``token`` to
    ``$JUPYTER_GATEWAY_AUTH_TOKEN`` (Enterprise Gateway's ``EG_AUTH_TOKEN``).  Build variants
    with :meth:`replace`.
    """

    gateway_http: str
    gateway_ws: str = ""
    kernel_name: str = "python3"
    launch_env: Mapping[str, str] = field(default_factory=dict, hash=False)
    """Environment of the kernel (Enterprise Gateway passes ``KERNEL_*`` variables on)."""
    startup_timeout: float = 30.0
    """Seconds for a kernel to start and answer; also bounds each (re)connection."""
    max_retries: int = 3
    """Retries of connection failures and 5xx when starting or (re)connecting."""
    retry_delay: float = 1.0
    """First backoff delay in seconds; it doubles with every retry."""
    request_timeout: float = 30.0
    """Limit of one REST request to the gateway (a kernel start uses ``startup_timeout``)."""
    token: str | None = field(default=None, repr=False)
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    """Output one ``execute`` keeps (text characters and MIME values); the rest is dropped and
    the result is marked ``truncated``."""
    max_message_bytes: int | None = None
    """Largest single websocket message accepted; ``None``: ``max_output_bytes`` + 1 MiB.  A
    larger one is refused unread (the connection is closed and re-opened on next use)."""
    egress_allow: Sequence[str] = ()
    """Names the kernel may reach (``pypi.org``, ``*.pythonhosted.org``, ``api.example.org:8443``),
    within the gateway's ceiling; sent as ``KERNEL_EGRESS_ALLOW``.  Empty: no egress.  A name
    beyond the ceiling refuses the start (:class:`EgressRefusedError`)."""
    username: str = field(init=False, repr=False)
    """``KERNEL_USERNAME`` the kernel is started for (see :func:`kernel_username`)."""

    def __post_init__(self) -> None:
        _check_url("gateway_http", self.gateway_http, ("http://", "https://"))
        if not self.gateway_ws:
            self._set("gateway_ws", ws_of(self.gateway_http))
        _check_url("gateway_ws", self.gateway_ws, ("ws://", "wss://"))
        self._set("gateway_http", self.gateway_http.rstrip("/"))
        self._set("gateway_ws", self.gateway_ws.rstrip("/"))
        if not isinstance(self.kernel_name, str) or not self.kernel_name.strip():
            raise ValueError("kernel_name must be a non-empty string")
        env = dict(self.launch_env or {})
        for key, value in env.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError(f"launch_env[{key!r}] must be a string, not {type(value).__name__}")
        self._set("egress_allow", _egress_allow(self.egress_allow))
        if self.egress_allow:
            joined = ",".join(self.egress_allow)
            if env.get(EGRESS_ENV, joined) != joined:
                raise ValueError(
                    f"egress_allow and launch_env[{EGRESS_ENV!r}] disagree; set one of them"
                )
            env[EGRESS_ENV] = joined
        self._set("launch_env", MappingProxyType(env))
        for name in ("startup_timeout", "request_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.max_retries < 0 or self.retry_delay < 0:
            raise ValueError("max_retries and retry_delay must not be negative")
        if self.max_output_bytes < 0:
            raise ValueError("max_output_bytes must not be negative")
        if self.max_message_bytes is None:
            self._set("max_message_bytes", self.max_output_bytes + MESSAGE_ENVELOPE)
        elif self.max_message_bytes < 64 * 1024:
            raise ValueError("max_message_bytes must be at least 64 KiB (kernel_info fits)")
        if not self.token:
            self._set("token", os.environ.get(TOKEN_ENV) or None)
        self._set("username", kernel_username(env))

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # frozen: derived values are set once, here

    @property
    def headers(self) -> dict[str, str]:
        """What every request and the websocket carry (the gateway's token, if any)."""
        return {"Authorization": f"token {self.token}"} if self.token else {}

    @property
    def message_limit(self) -> int:
        """``max_message_bytes``, resolved."""
        assert self.max_message_bytes is not None
        return self.max_message_bytes

    def replace(self, **changes: Any) -> GatewayConfig:
        """A copy with ``changes``, validated again; a derived ``gateway_ws`` follows
        ``gateway_http``, a derived ``max_message_bytes`` follows ``max_output_bytes``, and
        ``launch_env`` follows a new ``egress_allow``."""
        if "egress_allow" in changes and "launch_env" not in changes and self.egress_allow:
            changes["launch_env"] = {k: v for k, v in self.launch_env.items() if k != EGRESS_ENV}
        if "gateway_http" in changes and self.gateway_ws == ws_of(self.gateway_http):
            changes.setdefault("gateway_ws", "")
        derived_limit = self.max_output_bytes + MESSAGE_ENVELOPE
        if "max_output_bytes" in changes and self.max_message_bytes == derived_limit:
            changes.setdefault("max_message_bytes", None)
        return dataclasses.replace(self, **changes)


def _egress_allow(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError("egress_allow must be a list of names, not one string")
    names = tuple(value or ())
    for name in names:
        if not isinstance(name, str) or not name.strip() or "," in name:
            raise ValueError(f"egress_allow entries must be names without commas, got {name!r}")
    return tuple(name.strip() for name in names)


@dataclass(frozen=True)
class FileServerConfig:
    """The token-protected file server whose root is the kernels' shared volume.

    ``shared_dir`` is where kernels see that volume (``/data/shared`` in the containers).
    """

    url: str
    token: str = field(repr=False)
    shared_dir: str = "/data/shared"
    connect_timeout: float = 10.0
    read_timeout: float = 300.0
    """Seconds without a byte moving before a transfer is abandoned."""

    def __post_init__(self) -> None:
        _check_url("file server url", self.url, ("http://", "https://"))
        object.__setattr__(self, "url", self.url.rstrip("/"))
        if not isinstance(self.token, str) or not self.token:
            raise ValueError("the file server token must be a non-empty string")
        if not posixpath.isabs(self.shared_dir):
            raise ValueError(f"shared_dir must be an absolute path, got {self.shared_dir!r}")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("file server timeouts must be positive")

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


_DEFAULTS: Final = {
    f.name: f.default for f in dataclasses.fields(GatewayConfig) if f.init and f.name != "token"
}


def coerce_config(
    source: str | GatewayConfig,
    gateway_ws: str | None = None,
    kernel_name: str | None = None,
    **options: Any,
) -> GatewayConfig:
    """``source`` if it is a config (then nothing else may be given), else a config of the
    seed's arguments; ``options`` are further :class:`GatewayConfig` fields, ``None`` meaning
    "the default"."""
    given = {k: v for k, v in options.items() if v is not None}
    if isinstance(source, GatewayConfig):
        clashing = [k for k, v in given.items() if _DEFAULTS.get(k, dataclasses.MISSING) != v]
        if gateway_ws is not None or kernel_name is not None or clashing:
            raise TypeError(
                "pass either a GatewayConfig or the connection arguments, not both "
                "(use config.replace(...) for a variant)"
            )
        return source
    if kernel_name is not None:
        given["kernel_name"] = kernel_name
    return GatewayConfig(source, gateway_ws or "", **given)


def ws_of(http_url: str) -> str:
    """The websocket base matching an HTTP base (``http`` → ``ws``, ``https`` → ``wss``)."""
    if http_url.startswith("https://"):
        return "wss://" + http_url[len("https://") :]
    return "ws://" + http_url[len("http://") :]


def kernel_username(launch_env: Mapping[str, str] | None) -> str:
    """The user the kernel is started for (``KERNEL_USERNAME``).

    Enterprise Gateway refuses kernels for unauthorised users, ``root`` by default, and falls
    back to its own process user when the request names none.  Containers run kernels as the
    unprivileged ``jovyan``, so that is the identity used when the caller is root.
    """
    if launch_env and launch_env.get("KERNEL_USERNAME"):
        return launch_env["KERNEL_USERNAME"]
    if os.environ.get("KERNEL_USERNAME"):
        return os.environ["KERNEL_USERNAME"]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = ""
    return user if user and user != "root" else "jovyan"


def _check_url(name: str, value: object, schemes: tuple[str, ...]) -> None:
    if not isinstance(value, str) or not value.startswith(schemes):
        raise ValueError(f"{name} must start with {' or '.join(schemes)}, got {value!r}")
