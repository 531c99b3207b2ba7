"""``mypy --strict`` over the packages the project ships, each where its imports are installed.

pyproject.toml's ``[tool.mypy]`` is the one configuration: its ``files`` are the packages the host
venv checks.  The packages in ``SEPARATE_VENVS`` import servers the host venv does not hold, and
each is checked in a venv like the one it runs in: Enterprise Gateway 3.3 pins jupyter_client 6
and jupyter_server 1 (the client's tests need jupyter_client 8); the notebook runs on the notebook
image's jupyter_server 2 and Notebook 7.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from testkit.gateway import gateway_venv
from testkit.venvs import REPO, notebook_venv

SEPARATE_VENVS: dict[str, Callable[[], Path]] = {
    "sandbox_gateway": gateway_venv,
    "sandbox_notebook": notebook_venv,
}
"""Package → the venv (created on demand) whose Python checks it."""


def mypy(python: Path | str, *targets: str, cache: Path | None = None) -> tuple[bool, str]:
    """Run mypy with the project's configuration from the repository root: on ``targets``, or on
    its ``files`` when none are given.  Returns whether it passed, and what it printed."""
    command = [str(python), "-m", "mypy", "--config-file", str(REPO / "pyproject.toml")]
    if cache is not None:
        command += ["--cache-dir", str(cache)]
    result = subprocess.run(
        [*command, *targets], cwd=REPO, capture_output=True, text=True, check=False
    )
    return result.returncode == 0, result.stdout + result.stderr


def mypy_in_own_venv(package: str) -> tuple[bool, str]:
    """``mypy`` on ``package`` (a directory: its config files in ``etc/`` included), run by the
    Python of its venv, with a cache of that venv's own (the host's would describe other
    versions of the same libraries)."""
    venv = SEPARATE_VENVS[package]()
    return mypy(venv / "bin" / "python", package, cache=venv / ".mypy_cache")
