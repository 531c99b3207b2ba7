"""The gateway's sandbox, applied to Enterprise Gateway: ``configure`` is the one entry point.

Enterprise Gateway's config file calls ``configure(get_config())``; the image's file, and the
test gateway's, is ``sandbox_gateway/etc/jupyter_enterprise_gateway_config.py``.  Everything here
is backend-neutral: the Docker specifics (network, kernelspecs, poll interval) come from the
gateway image's environment and command line, so the test gateway that runs local kernels loads
this same file.
"""

from __future__ import annotations

import os
from typing import Any


def configure(c: Any) -> None:
    """Patch Enterprise Gateway with the sandbox's rules, and set its config ``c`` to match."""
    from sandbox_gateway import response
    from sandbox_gateway.admission import limits, tenants
    from sandbox_gateway.http import hosts, messages, patches
    from sandbox_gateway.pool import manager as pool

    patches.apply()
    hosts.apply()  # DNS rebinding: foreign Host headers are refused
    settings = limits.apply()  # kernel-count limits, start-request checks (403/400/404)
    tenants.apply()  # SANDBOX_TENANTS_FILE: tokens are tenants, kernels have owners
    messages.apply()  # a kernel message above SANDBOX_MAX_MESSAGE_BYTES is cut
    response.apply()
    pool.apply(max_kernels=settings.max_kernels)  # warm kernels per kernelspec, /metrics
    if os.environ.get("SANDBOX_KERNEL_SUBNETS"):  # Docker kernels, each on a network of its own
        from sandbox_gateway.proxies import docker

        docker.apply()
    _configure_gateway(c)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    return default if not value else value in ("1", "true", "yes", "on")


def _configure_gateway(c: Any) -> None:
    # Every SANDBOX_* setting of the gateway reaches the kernel launcher, also when a client sends
    # its own ``env`` (EG then passes the launcher only the variables named here, plus KERNEL_*);
    # a client's own SANDBOX_* values never pass (EG takes only KERNEL_* and client_envs from a
    # request).
    c.EnterpriseGatewayApp.inherited_envs = sorted(
        {name for name in os.environ.get("EG_INHERITED_ENVS", "").split(",") if name}
        | {name for name in os.environ if name.startswith("SANDBOX_")}
    )

    # Idle kernels hold a container (memory, pids) each: cull them.  A kernel is idle when it has
    # not executed anything for SANDBOX_CULL_IDLE_TIMEOUT seconds; 0 disables culling.  Kernels
    # with an open websocket are culled too by default, because an abandoned notebook tab keeps
    # one open.
    c.MappingKernelManager.cull_idle_timeout = _env_int("SANDBOX_CULL_IDLE_TIMEOUT", 3600)
    c.MappingKernelManager.cull_interval = _env_int("SANDBOX_CULL_INTERVAL", 60)
    c.MappingKernelManager.cull_connected = _env_bool("SANDBOX_CULL_CONNECTED", True)
    c.MappingKernelManager.cull_busy = False

    # Session persistence: the gateway writes each kernel's connection info to persistence_root
    # and, when it starts after a crash (OOM kill, SIGKILL, host reboot of the gateway container
    # only), re-attaches to the kernel containers still running instead of forgetting them — they
    # would otherwise run on, unreachable, until removed by hand.  "standalone" availability makes
    # EG load every persisted session at start-up (the default "replication" loads one only when
    # a client names it, so GET /api/kernels would not list it).  A graceful stop still shuts
    # every kernel down and deletes its session: that is EG's own behaviour, and it keeps
    # `docker-compose down` from leaving kernel containers behind.  Off unless
    # SANDBOX_SESSION_PERSISTENCE is set, since it needs a directory that survives the gateway
    # container.
    if _env_bool("SANDBOX_SESSION_PERSISTENCE", False):
        c.KernelSessionManager.enable_persistence = True
        c.EnterpriseGatewayApp.availability_mode = "standalone"
        if os.environ.get("SANDBOX_SESSION_ROOT"):
            c.KernelSessionManager.persistence_root = os.environ["SANDBOX_SESSION_ROOT"]
