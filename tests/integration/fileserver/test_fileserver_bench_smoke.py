"""The benchmark script still runs end to end (tiny size); its numbers are not judged here."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from tests.integration.fileserver.fileserver_harness import REPO, server_env

pytestmark = pytest.mark.integration


def test_bench_prints_one_table_with_every_row() -> None:
    clients = ["requests", "curl"] if shutil.which("curl") else ["requests"]
    result = subprocess.run(
        [
            sys.executable,
            "bench/bench_fileserver.py",
            "--size-mib",
            "4",
            "--repeat",
            "1",
            "--client",
            "both" if len(clients) == 2 else "requests",
        ],
        cwd=REPO,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("|")]
    labels = ["cp (baseline)", "server peak RSS (VmHWM)"]
    labels += [
        f"{way}, {client}" for client in clients for way in ("upload (PUT)", "download (GET)")
    ]
    if "curl" in clients:
        labels.append("download (GET) to /dev/null, curl")
    # Header, separator and one row per label.
    assert len(rows) == 2 + len(labels), result.stdout
    for label in labels:
        assert any(row.startswith(f"| {label} |") for row in rows), label
    for client in clients:
        assert re.search(
            rf"\| upload \(PUT\), {client} \| [\d,]+ MB/s \| \d+\.\d\dx \| [\d.]+ s/GiB \|",
            result.stdout,
        )
    assert re.search(r"\| server peak RSS \(VmHWM\) \| \d+\.\d MB \|", result.stdout)


def test_listing_bench_prints_before_and_after_rows() -> None:
    script = "bench/bench_fileserver_listing.py"
    # The "before" server comes from git history, which a shallow clone may lack.
    has_before = (
        subprocess.run(
            ["git", "cat-file", "-e", "e27400c^{commit}"], cwd=REPO, capture_output=True
        ).returncode
        == 0
    )
    argv = [sys.executable, script, "--entries", "3000", "--repeat", "1"]
    if not has_before:
        argv += ["--before-ref", "none"]
    result = subprocess.run(
        argv, cwd=REPO, env=server_env(), capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    labels = [
        "after: server idle after start",
        "after: first page, default limit",
        "after: all pages, limit=10000",
        "after: all pages, default limit (1000)",
    ]
    if has_before:
        labels += ["before: server idle after start", "before: GET /files?path=big (one body)"]
    assert len(rows) == 1 + len(labels), result.stdout
    for label in labels:
        assert any(row.startswith(f"| {label} |") for row in rows), label
    assert re.search(
        r"\| after: all pages, default limit \(1000\) \| 3 \| 3,000 \| [\d.]+ MiB \| [\d.]+ s "
        r"\| [\d.]+ MB \|",
        result.stdout,
    ), result.stdout
    assert re.search(r"Target: server peak RSS < 100 MB after paging: (met|MISSED)", result.stdout)
