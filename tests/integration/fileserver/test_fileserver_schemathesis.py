"""Property-based fuzzing of every operation in /openapi.json with schemathesis: no 5xx."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.fileserver.fileserver_harness import FileServer, start_uvicorn

pytestmark = pytest.mark.integration


@pytest.fixture
def fuzz_server(tmp_path: Path) -> Iterator[FileServer]:
    # A server of its own: the fuzzer writes and deletes freely under its root.
    root = tmp_path / "shared"
    root.mkdir()
    (root / "seed.txt").write_bytes(b"seed")
    (root / "dir").mkdir()
    server = start_uvicorn(root, tmp_path / "server.log")
    try:
        yield server
    finally:
        server.stop()


def _schemathesis() -> list[str]:
    # The CLI of the interpreter running the tests, whatever is first on PATH.
    if importlib.util.find_spec("schemathesis") is None:
        pytest.fail("schemathesis is not installed (pip install 'schemathesis>=4.32,<5')")
    return [sys.executable, "-m", "schemathesis.cli"]


@pytest.mark.parametrize("authenticated", [True, False], ids=["with-token", "without-token"])
def test_no_server_errors(fuzz_server: FileServer, tmp_path: Path, authenticated: bool) -> None:
    argv = [
        *_schemathesis(),
        "run",
        f"{fuzz_server.base_url}/openapi.json",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        "40",
        "--workers",
        "1",
        "--seed",
        "20261126",
        "--no-color",
        "--generation-database",
        "none",
    ]
    if authenticated:
        argv += ["--header", f"Authorization: Bearer {fuzz_server.token}"]
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=240, check=False, cwd=tmp_path
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", output)
    assert generated is not None, output[-3000:]
    assert int(generated.group(1)) >= 100
    assert generated.group(1) == generated.group(2), output[-6000:]
