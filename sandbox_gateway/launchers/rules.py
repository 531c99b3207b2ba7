"""What both kernel launchers check, and the gateway judges a kernel by, in one place.

The launchers (``launchers.docker``, ``launchers.kubernetes``) run once per kernel as
``python -I -m``, outside Enterprise Gateway; the gateway's admission limits, warm pool and Docker
process proxy must judge a kernel the way they do.  So this module uses the standard library
only and imports nothing else of the project.

* Sizes: Docker's size syntax (``parse_size``), the kernel memory a launcher refuses to go
  below, and its default.
* Kernel ids: the only ones a launcher names a container, network or pod after.
* The variables of a launch's environment that reach the kernel (``request_variables``): its
  ``KERNEL_*`` ones, except those that steer the gateway or the launcher
  (``LAUNCH_CONTROL_VARS``), and the client variables the kernelspec lists
  (``SANDBOX_CLIENT_ENVS``).  A kernel from the warm pool is given the same set when it is
  claimed.
* Container names: ``<user>-<kernel id>``, the user part cleaned of what Docker refuses.
* Egress: the variables that point a kernel's tools at the egress process (``egress_variables``),
  given to every kernel of a gateway with egress, so that a warm one takes its list at claim.

A value that breaks a rule raises :class:`RuleError`; each caller turns it into its own error
(a launch refused, a gateway setting refused).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Final

_SIZE: Final = re.compile(r"(\d+)([bkmg]?)", re.IGNORECASE)
_UNITS: Final = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
DEFAULT_KERNEL_MEMORY: Final = "512m"
MIN_KERNEL_MEMORY: Final = 64 * 1024**2
"""Below this ipykernel cannot start: a typo, not a choice (and ``0`` would mean unlimited)."""

KERNEL_ID: Final = re.compile(r"[0-9a-fA-F-]{32,36}")
"""A kernel id as Enterprise Gateway makes one (a UUID, with or without its dashes)."""

KERNEL_ENV_NAME: Final = re.compile(r"KERNEL_[A-Z0-9_]+")
"""The names of the variables a kernel is given from a launch's environment."""
LAUNCH_CONTROL_VARS: Final = frozenset(
    {
        "KERNEL_IMAGE",
        "KERNEL_EXECUTOR_IMAGE",
        "KERNEL_UID",
        "KERNEL_GID",
        "KERNEL_LAUNCH_TIMEOUT",
        "KERNEL_GATEWAY",
        "KERNEL_NAMESPACE",
        "KERNEL_SERVICE_ACCOUNT_NAME",
    }
)
"""``KERNEL_*`` variables that steer the gateway or a launcher: consumed there, never passed to
the kernel (a client could otherwise, e.g., make the kernel believe it runs as another uid).
``KERNEL_WORKING_DIR`` does pass: the kernel image's bootstrap starts the kernel there if it is
an existing directory."""
EGRESS_CA_DIR: Final = "/etc/sandbox-egress"
EGRESS_CA_FILE: Final = f"{EGRESS_CA_DIR}/ca.pem"
EGRESS_PROXY_PORT: Final = 3128
_CA_VARIABLES: Final = (
    "SSL_CERT_FILE",  # OpenSSL's default: Python's ssl, urllib, httpx, curl's OpenSSL
    "REQUESTS_CA_BUNDLE",
    "PIP_CERT",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
)
_CLIENT_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NOT_IN_NAME: Final = re.compile(r"[^a-zA-Z0-9_.-]")


class RuleError(ValueError):
    """A value breaks one of these rules; the message says which, in one line."""


def parse_size(text: str) -> int:
    """'512m' -> bytes, in Docker's units (b, k, m, g; powers of 1024)."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise RuleError(f"invalid size {text!r} (expected e.g. 512m, 1g)")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def check_kernel_id(kernel_id: str) -> str:
    """``kernel_id`` if it is one, else :class:`RuleError`: it becomes part of resource names."""
    if not KERNEL_ID.fullmatch(kernel_id):
        raise RuleError(f"invalid kernel id {kernel_id!r}")
    return kernel_id


def client_env_names(text: str) -> frozenset[str]:
    """The variable names of a kernelspec's ``SANDBOX_CLIENT_ENVS`` (a comma list)."""
    return frozenset(name for name in text.split(",") if _CLIENT_ENV_NAME.fullmatch(name))


def request_variables(env: Mapping[str, str], client_envs: Collection[str] = ()) -> dict[str, str]:
    """The variables of a launch's environment that reach the kernel; nothing else of it does
    (it may hold every secret of the gateway)."""
    return {
        name: value
        for name, value in env.items()
        if (KERNEL_ENV_NAME.fullmatch(name) and name not in LAUNCH_CONTROL_VARS)
        or name in client_envs
    }


def egress_variables(address: str) -> dict[str, str]:
    """The kernel's proxy and CA variables for the egress process at ``address``.  Every TLS
    connection a kernel can make ends at the egress process, so its CA is the only one trusted;
    code that ignores the proxy variables is served too (the kernel's DNS answers an allowed name
    with ``address``)."""
    proxy = f"http://{address}:{EGRESS_PROXY_PORT}"
    variables = {name: EGRESS_CA_FILE for name in _CA_VARIABLES}
    for name in ("HTTP_PROXY", "HTTPS_PROXY"):
        variables[name] = variables[name.lower()] = proxy
    variables["NO_PROXY"] = variables["no_proxy"] = "localhost,127.0.0.1"
    return variables


def sanitize_name(text: str) -> str:
    """Docker container names allow [a-zA-Z0-9][a-zA-Z0-9_.-]; KERNEL_USERNAME is client input."""
    cleaned = _NOT_IN_NAME.sub("-", text).strip("-_.")
    return cleaned[:32] or "kernel"


def container_name(user: str, kernel_id: str) -> str:
    """The name of the container of ``user``'s kernel, whether started cold or from the pool."""
    return f"{sanitize_name(user)}-{kernel_id}"
