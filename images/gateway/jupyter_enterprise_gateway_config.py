"""Enterprise Gateway configuration shared by the gateway image and the test gateway.

Everything here is backend-neutral: the Docker specifics (network, kernelspecs, poll interval)
come from the gateway image's environment and command line, so the test gateway that runs local
kernels loads this same file.  Tunables are read from the environment with local defaults.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sandbox_gateway_patches
import sandbox_hosts
import sandbox_limits
import sandbox_messages
import sandbox_pool
import sandbox_response
import sandbox_tenants

sandbox_gateway_patches.apply()
sandbox_hosts.apply()  # DNS rebinding: foreign Host headers get 400
limits = sandbox_limits.apply()  # kernel-count limits, start-request checks (403/400/404)
sandbox_tenants.apply()  # SANDBOX_TENANTS_FILE: tokens are tenants, kernels have owners
sandbox_messages.apply()  # a kernel message above SANDBOX_MAX_MESSAGE_BYTES is cut
sandbox_response.apply()
sandbox_pool.apply(max_kernels=limits.max_kernels)  # warm kernels per kernelspec, /metrics

if os.environ.get("SANDBOX_KERNEL_SUBNETS"):  # Docker kernels, each on a network of its own
    import sandbox_docker

    sandbox_docker.apply()

c = get_config()  # type: ignore[name-defined]  # noqa: F821  (injected by traitlets)

# Every SANDBOX_* setting of the gateway reaches the kernel launcher, also when a client sends its
# own ``env`` (EG then passes the launcher only the variables named here, plus KERNEL_*); a
# client's own SANDBOX_* values never pass (EG takes only KERNEL_* and client_envs from a request).
c.EnterpriseGatewayApp.inherited_envs = sorted(
    {name for name in os.environ.get("EG_INHERITED_ENVS", "").split(",") if name}
    | {name for name in os.environ if name.startswith("SANDBOX_")}
)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    return default if not value else value in ("1", "true", "yes", "on")


# Idle kernels hold a container (memory, pids) each: cull them.  A kernel is idle when it has not
# executed anything for SANDBOX_CULL_IDLE_TIMEOUT seconds; 0 disables culling.  Kernels with an
# open websocket are culled too by default, because an abandoned notebook tab keeps one open.
c.MappingKernelManager.cull_idle_timeout = _env_int("SANDBOX_CULL_IDLE_TIMEOUT", 3600)
c.MappingKernelManager.cull_interval = _env_int("SANDBOX_CULL_INTERVAL", 60)
c.MappingKernelManager.cull_connected = _env_bool("SANDBOX_CULL_CONNECTED", True)
c.MappingKernelManager.cull_busy = False

# Session persistence: the gateway writes each kernel's connection info to persistence_root and,
# when it starts after a crash (OOM kill, SIGKILL, host reboot of the gateway container only),
# re-attaches to the kernel containers still running instead of forgetting them — they would
# otherwise run on, unreachable, until removed by hand.  "standalone" availability makes EG load
# every persisted session at start-up (the default "replication" loads one only when a client
# names it, so GET /api/kernels would not list it).  A graceful stop still shuts every kernel down
# and deletes its session: that is EG's own behaviour, and it keeps `docker-compose down` from
# leaving kernel containers behind.  Off unless SANDBOX_SESSION_PERSISTENCE is set, since it needs
# a directory that survives the gateway container.
if _env_bool("SANDBOX_SESSION_PERSISTENCE", False):
    c.KernelSessionManager.enable_persistence = True
    c.EnterpriseGatewayApp.availability_mode = "standalone"
    if os.environ.get("SANDBOX_SESSION_ROOT"):
        c.KernelSessionManager.persistence_root = os.environ["SANDBOX_SESSION_ROOT"]
