"""``mypy --strict`` on ``sandbox_gateway`` in the gateway's own venv (Enterprise Gateway 3.3,
jupyter_client 6, jupyter_server 1.24, docker), where the types it builds on are installed:
the host venv holds jupyter_client 8 and no Enterprise Gateway."""

from __future__ import annotations

from testkit.typecheck import mypy_in_own_venv


def test_the_gateway_package_passes_mypy_strict() -> None:
    passed, output = mypy_in_own_venv("sandbox_gateway")
    assert passed, f"mypy sandbox_gateway (in the gateway's venv):\n{output}"
