"""``mypy --strict`` on ``sandbox_notebook`` in a venv of the notebook image's packages
(images/notebook/requirements.txt: jupyter_server 2, Notebook 7), which the host venv lacks."""

from __future__ import annotations

import pytest

from testkit.typecheck import mypy_in_own_venv


# The first run builds the venv: the image's ~80 pinned packages.
@pytest.mark.timeout(900)
def test_the_notebook_package_passes_mypy_strict() -> None:
    passed, output = mypy_in_own_venv("sandbox_notebook")
    assert passed, f"mypy sandbox_notebook (in the notebook's venv):\n{output}"
