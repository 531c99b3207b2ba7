"""Static checks of what the project ships: ``mypy --strict`` and ruff.

The packages the host venv can import are checked here; ``sandbox_gateway`` and
``sandbox_notebook`` in their servers' venvs (tests/integration/gateway/test_gateway_types.py,
tests/integration/notebook/test_notebook_types.py), with the same configuration.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from testkit.typecheck import SEPARATE_VENVS, mypy
from testkit.venvs import REPO

PYPROJECT: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text())
MYPY: dict[str, Any] = PYPROJECT["tool"]["mypy"]


def shipped_packages() -> set[str]:
    """The distribution's top-level packages (pyproject.toml's setuptools include patterns)."""
    find = PYPROJECT["tool"]["setuptools"]["packages"]["find"]
    return {pattern.rstrip("*") for pattern in find["include"]}


def test_every_shipped_package_is_type_checked() -> None:
    host = {Path(path).name for path in MYPY["files"]}
    assert not host & SEPARATE_VENVS.keys(), "a package is checked in two venvs"
    assert host | SEPARATE_VENVS.keys() == shipped_packages()


def test_the_configuration_is_strict_for_our_code() -> None:
    assert MYPY["strict"] is True
    ours = tuple(shipped_packages())
    for override in MYPY.get("overrides", []):
        modules = override["module"]
        for module in [modules] if isinstance(modules, str) else modules:
            assert not module.startswith(ours), f"an override relaxes our own {module}"


def test_host_packages_pass_mypy_strict() -> None:
    passed, output = mypy(sys.executable)
    assert passed, f"mypy (pyproject.toml [tool.mypy] files):\n{output}"


def test_the_configuration_rejects_untyped_code(tmp_path: Path) -> None:
    bad = tmp_path / "untyped.py"
    bad.write_text("def double(x):\n    return x * 2\n\n\nHALF: int = '1'\n")
    passed, output = mypy(sys.executable, str(bad), cache=tmp_path / "cache")
    assert not passed
    assert "untyped.py:1: error: Function is missing a type annotation" in output
    assert "untyped.py:5: error: Incompatible types in assignment" in output


def test_ruff_passes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "."],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    passed = result.returncode == 0
    assert passed, f"ruff check .:\n{result.stdout}{result.stderr}"
