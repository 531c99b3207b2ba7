"""Environment variables the platform controls, which a SandboxSession's ``spec.env`` may not set.

A session's ``env`` reaches Enterprise Gateway as the start request's ``env``; EG, the kernel
launcher, the kernel image's bootstrap and this controller read some of those names to decide
where, as whom, with what image and within which limits a kernel runs. A user who could set them
could loosen their own pod (bigger limits than ``spec.resources`` allow, another user name for
the per-user kernel count, another namespace or image) or take over another session's kernel id.

This is the one list. The CRD refuses the same names at ``kubectl apply`` with a CEL rule on
``spec.env`` (``crds/sandboxsessions.minisandbox.dev.yaml``; a chart test checks that the rule
names exactly these), and the reconciler refuses a spec that carries any of them anyway, for
objects written while an older CRD was installed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

RESERVED_ENV_PREFIXES: Final = ("KERNEL_CPUS", "KERNEL_MEMORY")
"""Names starting with these size the kernel (``KERNEL_CPUS``, ``KERNEL_MEMORY_LIMIT``, …): the
controller sets them from ``spec.resources`` only."""

RESERVED_ENV_NAMES: Final = (
    # The controller: the kernel id it derives from the object's uid, the owning session.
    "KERNEL_ID",
    "KERNEL_SANDBOX_SESSION",
    # The session's egress allow-list: from spec.egress.allow only, one place to read it.
    "KERNEL_EGRESS_ALLOW",
    # Enterprise Gateway: the user (authorisation, per-user kernel count), the launch deadline,
    # and what it sets for the launcher itself.
    "KERNEL_USERNAME",
    "KERNEL_LAUNCH_TIMEOUT",
    "KERNEL_LANGUAGE",
    "KERNEL_GATEWAY",
    # Where and as whom the kernel runs (EG's Kubernetes and Docker process proxies, the
    # launchers): namespace, pod, account, image, identity, working directory, mounts.
    "KERNEL_NAMESPACE",
    "KERNEL_POD_NAME",
    "KERNEL_SERVICE_ACCOUNT_NAME",
    "KERNEL_IMAGE",
    "KERNEL_EXECUTOR_IMAGE",
    "KERNEL_UID",
    "KERNEL_GID",
    "KERNEL_WORKING_DIR",
    "KERNEL_VOLUMES",
    "KERNEL_VOLUME_MOUNTS",
    # The kernel image's bootstrap: what it starts and where it reports its connection info.
    "KERNEL_CLASS_NAME",
    "KERNEL_LAUNCHERS_DIR",
    "KERNEL_SPARK_CONTEXT_INIT_MODE",
    "RESPONSE_ADDRESS",
    "PUBLIC_KEY",
    "PORT_RANGE",
    "TRANSPORT_ENCRYPTION",
)
"""Exact names the platform sets or reads."""


def is_reserved(name: str) -> bool:
    """Whether ``name`` is a variable the platform controls."""
    return name in RESERVED_ENV_NAMES or name.startswith(RESERVED_ENV_PREFIXES)


def reserved_names(names: Iterable[str]) -> list[str]:
    """The reserved names among ``names``, sorted (empty when ``names`` may all be set)."""
    return sorted(name for name in names if is_reserved(name))
