"""The benchmark script still runs end to end (tiny size); its numbers are not judged here."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.integration.fileserver.fileserver_harness import REPO, server_env

pytestmark = pytest.mark.integration


def test_bench_prints_one_table_with_every_row() -> None:
    result = subprocess.run(
        [sys.executable, "bench/bench_fileserver.py", "--size-mib", "4", "--repeat", "1"],
        cwd=REPO,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("|")]
    assert len(rows) == 6, result.stdout
    for label in ("cp (baseline)", "upload (PUT)", "download (GET)", "server peak RSS (VmHWM)"):
        assert any(row.startswith(f"| {label} |") for row in rows), label
    assert re.search(r"\| upload \(PUT\) \| [\d,]+ MB/s \| \d+\.\d\dx \|", result.stdout)
    assert re.search(r"\| server peak RSS \(VmHWM\) \| \d+\.\d MB \|", result.stdout)
