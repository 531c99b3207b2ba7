"""The sandbox's settings as traitlets config (``sandbox_gateway.settings``) on a real gateway.

``jupyter sandbox-gateway --help-all`` documents them; a config file or the command line sets
them, over the ``SANDBOX_*`` variables; a bad value stops the gateway with a clear message.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests
import tomllib

from jupyter_kernel_client import GatewayKernelSession
from sandbox_gateway import settings
from testkit.gateway import GATEWAY_CONFIG, REPO, Gateway, gateway_venv

MODULE, FUNCTION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"][
    "jupyter-sandbox-gateway"
].split(":")
APP = f"from {MODULE} import {FUNCTION}; {FUNCTION}()"
"""``jupyter sandbox-gateway``, as its console script runs it (the script itself is not installed
in the test gateway's venv)."""


def sandbox_gateway(*args: str, **kwargs: Any) -> Gateway:
    """``jupyter sandbox-gateway``."""
    return Gateway(command=[str(gateway_venv() / "bin" / "python"), "-c", APP], args=args, **kwargs)


def enterprise_gateway(*args: str, **kwargs: Any) -> Gateway:
    """``jupyter enterprisegateway``, as the test gateway runs it."""
    command = [str(gateway_venv() / "bin" / "jupyter"), "enterprisegateway"]
    return Gateway(command=command, args=args, **kwargs)


def without_venv(environ: Any) -> dict[str, str]:
    return {name: value for name, value in environ.items() if name != "VIRTUAL_ENV"}


def config_file(tmp_path: Path, *lines: str) -> Path:
    """The sandbox's config file with ``lines`` after its call of ``configure``."""
    path = tmp_path / "jupyter_enterprise_gateway_config.py"
    path.write_text(GATEWAY_CONFIG.read_text() + "c = get_config()\n" + "\n".join(lines) + "\n")
    return path


def start(gateway: Gateway, user: str) -> requests.Response:
    body = {"name": "python3", "env": {"KERNEL_USERNAME": user}}
    return requests.post(f"{gateway.http}/api/kernels", json=body, timeout=60)


def assert_one_kernel_only(gateway: Gateway) -> None:
    """The gateway takes one kernel (``SandboxLimits.max_kernels = 1``), and the kernel's
    launcher was given the same value as the gateway (the test gateway's variable says 64)."""
    with GatewayKernelSession(
        gateway.http, gateway.ws, "python3", {"KERNEL_USERNAME": "first"}
    ) as kernel:
        result = kernel.execute("import os; os.environ.get('SANDBOX_MAX_KERNELS')")
        assert result.execute_result == {"text/plain": "'1'"}
        refused = start(gateway, "second")
        assert refused.status_code == 403, refused.text
        assert refused.json()["kernel_limit"]["limit"] == 1


def stopped_with(gateway: Gateway) -> str:
    """The log of ``gateway``, which must exit instead of serving."""
    try:
        with pytest.raises(RuntimeError, match="exited early"):
            gateway.start()
        return gateway.log()
    finally:
        gateway.stop()


# --- --help-all ----------------------------------------------------------------------------------


def test_help_all_documents_every_setting_and_its_variable() -> None:
    output = subprocess.run(
        [str(gateway_venv() / "bin" / "python"), "-c", APP, "--help-all"],
        env={**without_venv(os.environ), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    # Enterprise Gateway's own settings are still there.
    assert "--EnterpriseGatewayApp.inherited_envs=" in output
    assert "--MappingKernelManager.cull_idle_timeout=" in output
    words = set(output.replace(",", " ").replace(".", " ").split())
    for env, setting in settings.env_names().items():
        assert f"--{setting}=" in output, setting
        assert f"${env}" in words, env
    for cls in settings.CLASSES:
        assert f"{cls.__name__}(Configurable) options" in output


# --- config wins over the variables ----------------------------------------------------------


def test_a_config_file_setting_overrides_the_variable_for_gateway_and_launcher(
    tmp_path: Path,
) -> None:
    # Set after the call of configure(): the sandbox reads its settings once all config is in.
    path = config_file(tmp_path, "c.SandboxLimits.max_kernels = 1")
    gateway = Gateway(config=path, env={"EG_UNAUTHORIZED_USERS": "nobody-in-particular"})
    gateway.start()
    try:
        assert_one_kernel_only(gateway)
    finally:
        gateway.stop()


@pytest.mark.parametrize("app", ["sandbox-gateway", "enterprisegateway"])
def test_a_command_line_setting_overrides_the_variable(app: str) -> None:
    arg = "--SandboxLimits.max_kernels=1"
    gateway = sandbox_gateway(arg) if app == "sandbox-gateway" else enterprise_gateway(arg)
    gateway.start()
    try:
        assert_one_kernel_only(gateway)
    finally:
        gateway.stop()


# --- bad values stop the gateway -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            'c.SandboxPool.sizes = {"python3": -1}',
            "invalid setting: SANDBOX_POOL: expected kernelspec=size pairs (e.g. python3=2), "
            "got 'python3=-1'",
        ),
        (
            'c.SandboxMessages.max_message_bytes = "sixteen"',
            "invalid setting: SANDBOX_MAX_MESSAGE_BYTES: invalid size 'sixteen'",
        ),
        (
            'c.SandboxLimits.max_kernels = "many"',
            "invalid setting: The 'max_kernels' trait of a SandboxLimits instance expected an int",
        ),
        ("c.SandboxLimits.max_kernels = 0", "invalid setting: SANDBOX_MAX_KERNELS must be"),
    ],
)
def test_a_bad_config_value_stops_the_gateway_with_a_clear_message(
    tmp_path: Path, line: str, message: str
) -> None:
    assert message in stopped_with(Gateway(config=config_file(tmp_path, line)))


def test_the_sandbox_gateway_without_the_sandbox_config_refuses_to_start() -> None:
    log = stopped_with(sandbox_gateway(config=None))
    assert "sandbox gateway: no config file applied the sandbox" in log
