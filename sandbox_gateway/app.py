"""``jupyter sandbox-gateway``: Enterprise Gateway whose help documents the sandbox's settings.

traitlets prints ``--help-all`` while it parses the command line, before any config file is
read, so ``jupyter enterprisegateway --help-all`` can never list the settings a config file
brings.  This application is Enterprise Gateway with the sandbox's ``Configurable``s among its
classes: its help lists every setting, and ``--SandboxPool.sizes python3=2`` is an option it
knows.  It keeps Enterprise Gateway's name, so it reads the same config files
(``jupyter_enterprise_gateway_config.py``) and their ``c.EnterpriseGatewayApp`` settings.

The sandbox itself is still applied by the config file (``sandbox_gateway.config.configure``, the
one entry point, which ``jupyter enterprisegateway --config=...`` uses too).  Started without it,
this application refuses to start: a gateway without the sandbox's rules runs client code with
none of its limits.
"""

from __future__ import annotations

from typing import Any

from enterprise_gateway.enterprisegatewayapp import EnterpriseGatewayApp

from sandbox_gateway import config, settings


class SandboxGatewayApp(EnterpriseGatewayApp):
    description = """
        The mini-jupyter-sandbox gateway: Jupyter Enterprise Gateway with the sandbox's rules,
        loaded by its config file (--config=.../jupyter_enterprise_gateway_config.py).  Each
        Sandbox* setting defaults to the SANDBOX_* variable named in its help.
    """
    # What --help-all documents and the command line knows (traitlets declares it per instance).
    classes = [*EnterpriseGatewayApp.classes, *settings.CLASSES]  # type: ignore[misc]  # noqa: RUF012

    def init_configurables(self) -> None:
        if not config.installed():
            raise SystemExit(
                "sandbox gateway: no config file applied the sandbox (sandbox_gateway.config."
                "configure); start with --config=<path to sandbox_gateway/etc/"
                "jupyter_enterprise_gateway_config.py>"
            )
        super().init_configurables()


def main(argv: list[str] | None = None, **kwargs: Any) -> None:
    SandboxGatewayApp.launch_instance(argv, **kwargs)
