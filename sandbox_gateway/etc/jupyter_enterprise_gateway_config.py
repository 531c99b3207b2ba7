# Enterprise Gateway's config file for the sandbox (the gateway image's and the test gateway's).
# The sandbox's settings may be set here, in another config file or on the command line, e.g.
# c.SandboxPool.sizes = {"python3": 2}; each defaults to its SANDBOX_* variable.  See
# `jupyter sandbox-gateway --help-all`.
from sandbox_gateway.config import configure

configure(get_config())  # type: ignore[name-defined]  # noqa: F821  (injected by traitlets)
