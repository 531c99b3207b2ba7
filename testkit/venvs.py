"""Cached virtual environments for what cannot share the host's: the gateway's and the notebook's.

Each venv is created once under ``CACHE`` and reused.  Its marker file (``.complete``) holds the
requirements it was installed with: when they change (a new pin, a tool added), they are
installed into the existing venv rather than the venv being rebuilt, so a venv cached before the
change keeps working (a marker from before markers held requirements is empty, and is brought up
to date the same way).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path.home() / ".cache" / "mini-jupyter-sandbox"
NOTEBOOK_REQUIREMENTS = REPO / "images" / "notebook" / "requirements.txt"
TYPE_CHECK_REQUIREMENTS = ["mypy>=1.14"]
"""What running ``mypy`` in a venv needs (1.14: ``follow_untyped_imports``, see pyproject.toml)."""


def cached_venv(venv: Path, requirements: Sequence[str]) -> Path:
    """``venv`` with ``requirements`` (pip requirement specifiers) installed, created on first use
    (safe against concurrent creators)."""
    marker = venv / ".complete"
    wanted = "\n".join(requirements)
    if _installed(marker) == wanted:
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        installed = _installed(marker)
        if installed == wanted:
            return venv
        if installed is None:  # never completed: start again from nothing
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *requirements], check=True)
        marker.write_text(wanted)
    return venv


def notebook_venv() -> Path:
    """The notebook image's packages (its requirements.txt: jupyter_server 2, notebook 7), for
    checking ``sandbox_notebook`` against them; ``SANDBOX_NOTEBOOK_VENV`` overrides where."""
    pins = [
        line.strip()
        for line in NOTEBOOK_REQUIREMENTS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    venv = Path(os.environ.get("SANDBOX_NOTEBOOK_VENV", CACHE / "notebook"))
    return cached_venv(venv, [*pins, *TYPE_CHECK_REQUIREMENTS])


def _installed(marker: Path) -> str | None:
    """The requirements the venv was completed with; None if it never was."""
    try:
        return marker.read_text()
    except FileNotFoundError:
        return None
