"""ARCHITECTURE.md names real places: every path it quotes exists, and every package it must
describe is named in it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
TEXT = (REPO / "ARCHITECTURE.md").read_text()
# Quoted repository paths: `a/b.py`, `a/b/`, `kernels/` (not commands or URLs).
QUOTED = re.compile(r"`((?:[a-z_]+/)+(?:[A-Za-z0-9_.-]+)?)`")


def quoted_paths() -> list[str]:
    return sorted({match for match in QUOTED.findall(TEXT) if not match.startswith("api/")})


def test_it_quotes_paths() -> None:
    assert len(quoted_paths()) > 20


@pytest.mark.parametrize("path", quoted_paths())
def test_every_quoted_path_exists(path: str) -> None:
    # The list of sandbox_gateway's parts and the images table name paths inside those folders.
    candidates = [REPO / path, REPO / "sandbox_gateway" / path, REPO / "images" / path]
    assert any(candidate.exists() for candidate in candidates), f"ARCHITECTURE.md names {path}"


def shipped_packages() -> list[str]:
    """Every top-level Python package of the distribution, as pyproject.toml finds them."""
    roots = [REPO, REPO / "client"]
    return sorted(
        str(init.parent.relative_to(REPO))
        for root in roots
        for init in root.glob("*/__init__.py")
        if init.parent.name not in {"tests", "testkit", "bench", "examples"}
    )


@pytest.mark.parametrize("package", shipped_packages())
def test_every_package_is_described(package: str) -> None:
    assert f"`{package}`" in TEXT or f"`{package}/" in TEXT, package


def test_every_module_of_the_gateway_package_has_a_place() -> None:
    modules = {
        str(path.relative_to(REPO / "sandbox_gateway"))
        for path in (REPO / "sandbox_gateway").rglob("*.py")
        if path.name != "__init__.py" and "etc" not in path.parts
    }
    named = {path.removeprefix("sandbox_gateway/") for path in quoted_paths()}
    folders = {
        path.rstrip("/") + "/" for path in named if (REPO / "sandbox_gateway" / path).is_dir()
    }
    missing = [m for m in modules if m not in named and not any(m.startswith(f) for f in folders)]
    assert not missing, f"ARCHITECTURE.md does not place {sorted(missing)}"
