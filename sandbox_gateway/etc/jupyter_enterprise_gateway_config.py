# Enterprise Gateway's config file for the sandbox (the gateway image's and the test gateway's).
# Settings go above the call, as c.SandboxPool.sizes = {...}: see `jupyter sandbox-gateway
# --help-all`.
from sandbox_gateway.config import configure

configure(get_config())  # type: ignore[name-defined]  # noqa: F821  (injected by traitlets)
