"""Shared fixtures: a real Enterprise Gateway with real kernels, started once per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.gateway import Gateway


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The tier is the folder: tests/unit → unit, tests/integration and tests/e2e → integration.
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "unit" in parts:
            item.add_marker(pytest.mark.unit)
        elif "integration" in parts or "e2e" in parts:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def gateway() -> Iterator[Gateway]:
    """A running gateway shared by the session's tests (do not stop it in a test)."""
    gw = Gateway().start()
    try:
        yield gw
    finally:
        gw.stop()
