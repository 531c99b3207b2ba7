"""The sandbox's settings as traitlets ``Configurable``s: ``c.SandboxPool.sizes = {"python3": 2}``.

The rule, for every setting:

* Each trait is tagged with the ``SANDBOX_*`` variable it stands for (``.tag(env=...)``).  Its
  default is ``None``: not set in config, the variable applies, and without the variable the
  built-in default named in its help.
* A value set in config (a config file, or ``--SandboxPool.sizes python3=2`` on the command line)
  wins over the variable.
* There is one parsing path: ``environment`` turns the config values into strings under their
  variables' names, overlaid on ``os.environ``, and the sandbox's modules read that mapping as
  they read the variables (same checks, same messages).  ``export`` writes those values to
  ``os.environ`` before anything reads it, so the kernel launchers (separate processes, given the
  gateway's ``SANDBOX_*`` variables by Enterprise Gateway) see the values the gateway sees.

``jupyter sandbox-gateway --help-all`` lists them all (``sandbox_gateway.app``);
``python -m sandbox_gateway.settings`` prints them as the Markdown tables of
``docs/configuration.md`` (``reference``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Final

from traitlets import Bool, Dict, Float, Int, List, TraitType, Unicode
from traitlets.config import Configurable

_EGRESS: Final = (
    "the egress process's (python -m sandbox_gateway.egress), which runs beside the gateway, "
    "not in it"
)
NOT_GATEWAY_SETTINGS: Final = {
    "SANDBOX_CLIENT_ENVS": "a kernelspec's env (the chart's): the Kubernetes launcher and the "
    "warm pool read it from the kernelspec, so a gateway-wide value would make them disagree",
    "SANDBOX_EGRESS_DNS": _EGRESS,
    "SANDBOX_EGRESS_RESOLVE": _EGRESS,
    "SANDBOX_EGRESS_ORIGIN_CA": _EGRESS,
    "SANDBOX_EGRESS_DENY": _EGRESS,
    "SANDBOX_EGRESS_STATE": _EGRESS,
    "SANDBOX_EGRESS_CONTROL_PORT": _EGRESS,
    "SANDBOX_EGRESS_LISTEN": _EGRESS,
    "SANDBOX_EGRESS_PUBLIC_CA": _EGRESS,
}
"""``SANDBOX_*`` names the package reads that are not gateway settings, and why."""


def _setting(kind: type[TraitType[Any, Any]], env: str, help: str, default: str, **kw: Any) -> Any:
    help = f"{help} Not set in config: ${env}, else {default}."
    return kind(default_value=None, allow_none=True, help=help, **kw).tag(config=True, env=env)


def _int(env: str, help: str, default: str) -> Any:
    return _setting(Int, env, help, default)


def _float(env: str, help: str, default: str) -> Any:
    return _setting(Float, env, help, default)


def _text(env: str, help: str, default: str) -> Any:
    return _setting(Unicode, env, help, default)


def _bool(env: str, help: str, default: str) -> Any:
    return _setting(Bool, env, help, default)


def _names(env: str, help: str, default: str) -> Any:
    return _setting(List, env, help, default, trait=Unicode())


class SandboxLimits(Configurable):
    """Kernel counts and launch time (``sandbox_gateway.admission.limits``)."""

    max_kernels = _int(
        "SANDBOX_MAX_KERNELS",
        "Kernels on the whole gateway, starting and pooled ones included; a start beyond it is "
        "refused with 403.",
        "floor(0.75 * the host's MemTotal / min(128 MiB, SandboxKernel.memory)), at least 1",
    )
    memory_reserve = _text(
        "SANDBOX_MEMORY_RESERVE",
        "Host memory (MemAvailable, Docker's size syntax) below which every start, warm or cold, "
        "is refused with 403 and the pool stops refilling: the cap overcommits memory (a kernel "
        "counts at 128 MiB, twice an idle one, not at its limit). 0 turns the check off.",
        "the larger of 5% of MemTotal and SandboxKernel.memory",
    )
    max_kernels_per_user = _int(
        "SANDBOX_MAX_KERNELS_PER_USER",
        "Kernels of one KERNEL_USERNAME (a tenant's own max_kernels replaces it).",
        "max_kernels",
    )
    max_launch_timeout = _float(
        "SANDBOX_MAX_LAUNCH_TIMEOUT",
        "Upper bound, in seconds (1 to 600), of a client's KERNEL_LAUNCH_TIMEOUT.",
        "300",
    )
    max_zmq_sockets = _int(
        "SANDBOX_MAX_ZMQ_SOCKETS",
        "ZMQ sockets the gateway may hold (at least 64): about six per live kernel, its own "
        "channels and each client's. libzmq's default of 1023 stopped new sessions at about 165 "
        "kernels.",
        "65536",
    )


class SandboxKernel(Configurable):
    """Each kernel's container, as the Docker launcher (``sandbox_gateway.launchers.docker``)
    creates it."""

    memory = _text(
        "SANDBOX_KERNEL_MEMORY",
        "Memory limit of a kernel, in Docker's syntax (512m, 1g; at least 64m; swap disabled); "
        "it also sizes the default SandboxLimits.max_kernels.",
        "512m",
    )
    cpus = _float("SANDBOX_KERNEL_CPUS", "CPU limit of a kernel (fractional CPUs, > 0).", "1")
    pids = _int("SANDBOX_KERNEL_PIDS", "Process limit of a kernel (> 0).", "256")
    tmp_size = _text(
        "SANDBOX_KERNEL_TMP_SIZE", "Size of each of a kernel's tmpfs (/tmp, home).", "64m"
    )
    user = _text(
        "SANDBOX_KERNEL_USER", "uid[:gid] of the kernel process (numeric, never root).", "1000:100"
    )
    allowed_images = _names(
        "SANDBOX_ALLOWED_KERNEL_IMAGES",
        "Images a client may ask for in KERNEL_IMAGE, besides the kernelspec's own.",
        "the kernelspec's image only",
    )
    shared_volume = _text(
        "SANDBOX_SHARED_VOLUME",
        "Named Docker volume mounted at /data/shared in every kernel.",
        "mini-jupyter-sandbox-shared",
    )
    remove_container = _bool(
        "SANDBOX_REMOVE_CONTAINER", "Remove a kernel's container when it exits.", "true"
    )


class SandboxDocker(Configurable):
    """The Docker backend (``sandbox_gateway.proxies.docker``): active when
    ``SandboxDocker.kernel_subnets`` (or its variable) is set, as in the gateway image."""

    kernel_subnets = _text(
        "SANDBOX_KERNEL_SUBNETS",
        "IPv4 address pool that each kernel's own network (a /28) is taken from; setting it "
        "turns the Docker backend on.",
        "no Docker backend (the launcher's own default: 10.213.0.0/16)",
    )
    docker_socket = _text(
        "SANDBOX_DOCKER_SOCKET", "The Docker Engine's socket.", "/var/run/docker.sock"
    )
    network_sweep_interval = _float(
        "SANDBOX_NETWORK_SWEEP_INTERVAL",
        "Seconds between sweeps of kernel networks left behind.",
        "60",
    )
    gateway_container = _text(
        "SANDBOX_GATEWAY_CONTAINER",
        "The gateway's own container id (each kernel network joins it).",
        "the id of the container the gateway runs in",
    )
    deployment = _text(
        "SANDBOX_DEPLOYMENT",
        "Label value that scopes the clean-up of kernel containers and networks to this "
        "deployment.",
        "the gateway container's compose project, else its short id",
    )


class SandboxPool(Configurable):
    """The warm pool (``sandbox_gateway.pool``): kernels started ahead of requests."""

    sizes = _setting(
        Dict,
        "SANDBOX_POOL",
        "Kernels kept ready per kernelspec, e.g. {'python3': 2} (SANDBOX_POOL=python3=2); "
        "they count against SandboxLimits.max_kernels.",
        "no pool",
        value_trait=Int(),
        key_trait=Unicode(),
    )
    max_age = _float(
        "SANDBOX_POOL_MAX_AGE", "Seconds a pooled kernel may wait before it is replaced.", "3600"
    )
    check_interval = _float(
        "SANDBOX_POOL_CHECK_INTERVAL", "Seconds between health checks of pooled kernels.", "10"
    )


class SandboxEgress(Configurable):
    """Egress allow-lists (``sandbox_gateway.egress.gateway``): the ceiling a session's
    ``KERNEL_EGRESS_ALLOW`` must lie within, and the egress process that enforces it."""

    allow = _text(
        "SANDBOX_EGRESS_ALLOW",
        "The operator's ceiling: comma list of domain patterns (pypi.org, *.pythonhosted.org), "
        "each optionally with :port (default 443 and 80). Empty: no session gets egress. The "
        "egress process reads the same variable.",
        "empty",
    )
    url = _text(
        "SANDBOX_EGRESS_URL",
        "The egress process's control port (http://egress:8900), where the gateway sends the "
        "table of grants.",
        "none: every KERNEL_EGRESS_ALLOW is refused",
    )
    control_token = _text(
        "SANDBOX_EGRESS_CONTROL_TOKEN",
        "The egress process's control token (16 characters or more), shared with it.",
        "none",
    )
    answer = _text(
        "SANDBOX_EGRESS_ANSWER",
        "The address a kernel's DNS answers an allowed name with, or the host name that "
        "resolves to it (the egress Service on Kubernetes).",
        "on Docker, the egress container's address on the kernel's network",
    )
    resend = _float(
        "SANDBOX_EGRESS_RESEND",
        "Seconds between resends of the whole table (a restarted egress process is whole "
        "again after at most this).",
        "5",
    )
    container = _text(
        "SANDBOX_EGRESS_CONTAINER",
        "The egress container that joins every kernel network (Docker).",
        "the deployment's compose service egress",
    )
    ca_volume = _text(
        "SANDBOX_EGRESS_CA_VOLUME",
        "Named Docker volume holding the egress CA's certificate, mounted read-only in every "
        "kernel at /etc/sandbox-egress.",
        "mini-jupyter-sandbox-egress-ca",
    )


class SandboxMessages(Configurable):
    """The bound on one kernel message (``sandbox_gateway.http.messages``)."""

    max_message_bytes = _text(
        "SANDBOX_MAX_MESSAGE_BYTES",
        "Largest kernel message forwarded whole (a size like 16m, at least 64k); a larger one "
        "is cut, with a notice.",
        "16m",
    )


class SandboxTenants(Configurable):
    """Tenants (``sandbox_gateway.admission.tenants``): tokens are tenants, kernels have owners."""

    file = _text(
        "SANDBOX_TENANTS_FILE",
        "JSON file of tenants (token, name, rights, max_kernels); empty: one token "
        "(EG_AUTH_TOKEN), no tenants.",
        "no tenants",
    )


class SandboxResponse(Configurable):
    """Bounds of the launch-response server (``sandbox_gateway.response``)."""

    timeout = _float(
        "SANDBOX_RESPONSE_TIMEOUT",
        "Seconds from accepting a response connection to the sender's end of stream.",
        "5",
    )
    max_bytes = _int("SANDBOX_RESPONSE_MAX_BYTES", "Largest launch response, in bytes.", "65536")
    max_per_peer = _int(
        "SANDBOX_RESPONSE_MAX_PER_PEER", "Open response connections from one address.", "4"
    )
    max_connections = _int(
        "SANDBOX_RESPONSE_MAX_CONNECTIONS", "Open response connections in total.", "256"
    )
    max_answers = _int(
        "SANDBOX_RESPONSE_MAX_ANSWERS",
        "Answers held for launches not yet bound to an address (keep it above "
        "SandboxLimits.max_kernels).",
        "1024",
    )


class SandboxHosts(Configurable):
    """The Host allow-list (``sandbox_gateway.http.hosts``) against DNS rebinding."""

    allowed = _names(
        "SANDBOX_ALLOWED_HOSTS",
        "Host names served besides loopback and the address a request arrived on; "
        "'.example.org' allows its subdomains.  Any other name is refused with 421.",
        "none",
    )


class SandboxMetrics(Configurable):
    """``GET /metrics`` (``sandbox_gateway.metrics``)."""

    port = _int(
        "SANDBOX_METRICS_PORT",
        "Serve /metrics on this port alone (the API port then answers it with 404).",
        "on the API port",
    )


class SandboxCulling(Configurable):
    """Idle kernels are culled (Enterprise Gateway's ``MappingKernelManager.cull_*``, which win
    when set in config)."""

    idle_timeout = _int(
        "SANDBOX_CULL_IDLE_TIMEOUT",
        "Seconds a kernel may go without executing before it is culled; 0 disables culling.",
        "3600",
    )
    interval = _int("SANDBOX_CULL_INTERVAL", "Seconds between checks for idle kernels.", "60")
    connected = _bool(
        "SANDBOX_CULL_CONNECTED",
        "Cull idle kernels with an open websocket too (an abandoned notebook tab keeps one).",
        "true",
    )


class SandboxSessions(Configurable):
    """Session persistence: a restarted gateway re-attaches to the kernels still running
    (Enterprise Gateway's ``KernelSessionManager`` and ``availability_mode``, which win when set
    in config)."""

    persistence = _bool(
        "SANDBOX_SESSION_PERSISTENCE",
        "Persist kernel sessions and load them all at start-up (availability mode standalone).",
        "false",
    )
    keep_kernels = _bool(
        "SANDBOX_KEEP_KERNELS_ON_STOP",
        "A stopping gateway leaves its kernels running for the next one to re-adopt (a "
        "rescheduled pod); needs persistence on a volume that outlives the gateway.",
        "false",
    )
    root = _text(
        "SANDBOX_SESSION_ROOT",
        "Directory of the persisted sessions (one that outlives the gateway's container).",
        "Enterprise Gateway's default",
    )


CLASSES: Final[list[type[Configurable]]] = [
    SandboxLimits,
    SandboxKernel,
    SandboxDocker,
    SandboxPool,
    SandboxEgress,
    SandboxMessages,
    SandboxTenants,
    SandboxResponse,
    SandboxHosts,
    SandboxMetrics,
    SandboxCulling,
    SandboxSessions,
]


def env_names() -> dict[str, str]:
    """Every tagged variable -> its setting, as ``Class.trait``."""
    return {
        trait.metadata["env"]: f"{cls.__name__}.{name}"
        for cls in CLASSES
        for name, trait in cls.class_traits(env=lambda env: env is not None).items()
    }


def as_env(value: object) -> str:
    """A config value in its variable's syntax."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return ",".join(f"{key}={item}" for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value)
    return str(value)


def configured(parent: Configurable) -> dict[str, str]:
    """The variables that ``parent``'s config sets (a trait's value is checked here: a wrong type
    raises ``TraitError``), in their variables' syntax."""
    values: dict[str, str] = {}
    for cls in CLASSES:
        settings = cls(parent=parent)
        for name, trait in settings.traits(env=lambda env: env is not None).items():
            value = getattr(settings, name)
            if value is not None:
                values[trait.metadata["env"]] = as_env(value)
    return values


def export(parent: Configurable) -> dict[str, str]:
    """Write the settings of ``parent``'s config to ``os.environ``; returns what was written."""
    values = configured(parent)
    os.environ.update(values)
    return values


_KINDS: Final[dict[type[TraitType[Any, Any]], str]] = {
    Int: "integer",
    Float: "number",
    Unicode: "string",
    Bool: "`true`/`false`",
    List: "comma list",
    Dict: "`name=value` list",
}
"""A trait's type, as its variable is written."""


def _cell(text: str) -> str:
    """``text`` as one Markdown table cell: a value (``512m``, ``max_kernels``) in code, prose
    with Markdown's characters escaped outside its code spans."""
    text = " ".join(text.replace("``", "`").split())
    if " " not in text and "`" not in text and (text in ("true", "false") or not text.isalpha()):
        return f"`{text}`"
    parts = text.split("`")
    parts[::2] = [part.replace("*", "\\*") for part in parts[::2]]
    return "`".join(parts).replace("|", "\\|")


def reference() -> str:
    """Every setting as Markdown, one table per ``Configurable``: its variable, its config name,
    its type, its default and its help, all read from the traits."""
    lines: list[str] = []
    for cls in CLASSES:
        traits = cls.class_traits(env=lambda env: env is not None)
        lines += [
            f"**`{cls.__name__}`**: {_cell(cls.__doc__ or '')}",
            "",
            "| variable | config | type | default | meaning |",
            "|---|---|---|---|---|",
        ]
        for name in (name for name in vars(cls) if name in traits):  # in declaration order
            trait = traits[name]
            env = trait.metadata["env"]
            meaning, _, default = trait.help.rpartition(f" Not set in config: ${env}, else ")
            cells = [
                f"`{env}`",
                f"`c.{cls.__name__}.{name}`",
                _KINDS[type(trait)],
                _cell(default.removesuffix(".")),
                _cell(meaning),
            ]
            lines.append(f"| {' | '.join(cells)} |")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    print(reference(), end="")
