"""The gateway's sandbox, applied to Enterprise Gateway: ``configure`` is the one entry point.

Enterprise Gateway's config file calls ``configure(get_config())``; the image's file, and the
test gateway's, is ``sandbox_gateway/etc/jupyter_enterprise_gateway_config.py``.  Everything here
is backend-neutral: the Docker specifics (network, kernelspecs, poll interval) come from the
gateway image's environment and command line, so the test gateway that runs local kernels loads
this same file.

The sandbox's rules are applied once all of the gateway's config is loaded (every config file
and the command line), so that ``c.SandboxPool.sizes`` (``sandbox_gateway.settings``) may be set
anywhere: Enterprise Gateway's ``init_configurables`` runs then, before it creates its kernel
manager, session manager and web application, and the sandbox goes first.
"""

from __future__ import annotations

import os
from typing import Any

_installed = False


def configure(c: Any) -> None:
    """Set Enterprise Gateway's config ``c`` for the sandbox, and have the sandbox's rules
    applied when the gateway initialises."""
    global _installed
    # A busy kernel is never culled: it is running the code it was started for.
    c.MappingKernelManager.cull_busy = False
    if _installed:  # a second config file calling this changes nothing more
        return
    from enterprise_gateway.enterprisegatewayapp import EnterpriseGatewayApp

    original = EnterpriseGatewayApp.init_configurables

    def init_configurables(self: Any) -> None:
        _apply(self)
        original(self)
        _raise_zmq_socket_cap(self.kernel_manager)

    EnterpriseGatewayApp.init_configurables = init_configurables  # type: ignore[method-assign]
    _installed = True


def installed() -> bool:
    """Whether a config file has called ``configure``."""
    return _installed


def _apply(app: Any) -> None:
    """Export the settings, patch Enterprise Gateway with the sandbox's rules, configure it."""
    from traitlets import TraitError

    from sandbox_gateway import response, settings
    from sandbox_gateway.admission import limits, tenants
    from sandbox_gateway.egress import gateway as egress
    from sandbox_gateway.http import hosts, messages, ordering, patches, status
    from sandbox_gateway.pool import manager as pool

    try:
        settings.export(app)  # from here on os.environ holds every setting the config sets
    except TraitError as exc:
        raise SystemExit(f"sandbox gateway: invalid setting: {exc}") from None
    patches.apply()
    hosts.apply()  # DNS rebinding: foreign Host headers are refused
    limit_settings = limits.apply()  # kernel-count limits, start-request checks (403/400/404)
    tenants.apply()  # SANDBOX_TENANTS_FILE: tokens are tenants, kernels have owners
    status.apply()  # GET /api/sandbox/status: versions, the caller's kernels, the pool
    messages.apply()  # a kernel message above SANDBOX_MAX_MESSAGE_BYTES is cut
    ordering.apply()  # a request's idle after its outputs, for kernels that send it early
    response.apply()
    if _env_bool("SANDBOX_KEEP_KERNELS_ON_STOP", False):  # before the pool wraps the shutdown
        if not _env_bool("SANDBOX_SESSION_PERSISTENCE", False):
            raise SystemExit(
                "sandbox gateway: SANDBOX_KEEP_KERNELS_ON_STOP needs SANDBOX_SESSION_PERSISTENCE:"
                " kernels kept without a persisted session could never be reached again"
            )
        from sandbox_gateway import stop

        stop.apply()
    pool.apply(max_kernels=limit_settings.max_kernels)  # warm kernels per kernelspec, /metrics
    egress.apply()  # KERNEL_EGRESS_ALLOW within the ceiling; grants, warm claims included
    if os.environ.get("SANDBOX_KERNEL_SUBNETS"):  # Docker kernels, each on a network of its own
        from sandbox_gateway.proxies import docker

        docker.apply()
    _configure_gateway(app, set(settings.env_names()))


def _raise_zmq_socket_cap(kernel_manager: Any) -> None:
    """Every kernel holds ZMQ sockets in the gateway (its channels, and each client's), all in
    the one context of the kernel manager: at libzmq's default cap of 1023 a new session failed
    at about 165 live kernels.  Set before the first kernel starts (libzmq reads it once, when
    the context's first socket is made)."""
    import zmq

    cap = _env_int("SANDBOX_MAX_ZMQ_SOCKETS", 65536)
    if cap < 64:
        raise SystemExit(
            f"sandbox gateway: invalid setting: SANDBOX_MAX_ZMQ_SOCKETS must be at least 64, "
            f"got {cap}"
        )
    kernel_manager.context.set(zmq.MAX_SOCKETS, cap)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    try:
        return int(value) if value else default
    except ValueError:
        raise SystemExit(
            f"sandbox gateway: invalid setting: {name} must be a whole number, got {value!r}"
        ) from None


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    return default if not value else value in ("1", "true", "yes", "on")


def _configure_gateway(app: Any, names: set[str]) -> None:
    # Every SANDBOX_* setting of the gateway reaches the kernel launcher, also when a client sends
    # its own ``env`` (EG then passes the launcher only the variables named here, plus KERNEL_*);
    # a client's own SANDBOX_* values never pass (EG takes only KERNEL_* and client_envs from a
    # request).  The names the gateway's config gives (EG_INHERITED_ENVS by default) stay.
    app.inherited_envs = sorted(
        {name for name in app.inherited_envs if name}
        | {name for name in os.environ if name.startswith("SANDBOX_")}
        | names
    )

    # Enterprise Gateway's own settings, each unless the gateway's config sets it itself.
    def unless_set(cls: type[Any], trait: str, value: object) -> None:
        if not any(f"{section}.{trait}" in app.config for section in cls.section_names()):
            if cls is type(app):
                setattr(app, trait, value)
            else:
                app.config[cls.__name__][trait] = value

    # Idle kernels hold a container (memory, pids) each: cull them.  A kernel is idle when it has
    # not executed anything for SANDBOX_CULL_IDLE_TIMEOUT seconds; 0 disables culling.  Kernels
    # with an open websocket are culled too by default, because an abandoned notebook tab keeps
    # one open.
    manager = app.kernel_manager_class
    unless_set(manager, "cull_idle_timeout", _env_int("SANDBOX_CULL_IDLE_TIMEOUT", 3600))
    unless_set(manager, "cull_interval", _env_int("SANDBOX_CULL_INTERVAL", 60))
    unless_set(manager, "cull_connected", _env_bool("SANDBOX_CULL_CONNECTED", True))

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
        sessions = app.kernel_session_manager_class
        unless_set(sessions, "enable_persistence", True)
        unless_set(type(app), "availability_mode", "standalone")
        if os.environ.get("SANDBOX_SESSION_ROOT"):
            unless_set(sessions, "persistence_root", os.environ["SANDBOX_SESSION_ROOT"])
