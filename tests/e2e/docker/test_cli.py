"""``mini-sandbox`` against the compose stack: what a shell user runs lands in kernel containers,
warm from the pool, and sees only the caller's own sessions."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.integration.cli.cli_harness import CLI, base_env

from .conftest import FILE_SERVER_TOKEN, GATEWAY_TOKENS, Stack

pytestmark = pytest.mark.integration


def mini_sandbox(
    stack: Stack, tmp_path: Path, *args: str, tenant: str = "e2e"
) -> subprocess.CompletedProcess[str]:
    env = base_env(
        tmp_path / "state",
        GATEWAY_HTTP=stack.gateway_http,
        JUPYTER_GATEWAY_AUTH_TOKEN=GATEWAY_TOKENS[tenant],
        FILE_SERVER_URL=stack.file_server_url,
        FILE_SERVER_TOKEN=FILE_SERVER_TOKEN,
        NOTEBOOK_URL=stack.notebook_url,
    )
    return subprocess.run(
        [*CLI, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )


def test_sh_and_run_land_in_kernel_containers(stack: Stack, tmp_path: Path) -> None:
    done = mini_sandbox(stack, tmp_path, "sh", "--", "id -u; cat /proc/1/cmdline | tr '\\0' ' '")
    assert done.returncode == 0, done.stderr
    uid, init = done.stdout.splitlines()
    assert uid == "1000" and init.startswith("/sbin/docker-init")
    failed = mini_sandbox(stack, tmp_path, "sh", "--", "touch /etc/probe")
    assert failed.returncode == 1 and "Read-only file system" in failed.stderr
    ran = mini_sandbox(stack, tmp_path, "run", "-c", "import os; print(os.getuid()); 6 * 7")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["1000", "42"]


def test_files_put_reaches_the_kernels(stack: Stack, tmp_path: Path) -> None:
    local = tmp_path / "cli-e2e.txt"
    local.write_text("from the shell\n")
    put = mini_sandbox(stack, tmp_path, "files", "put", str(local), "cli-e2e/notes.txt")
    assert put.returncode == 0, put.stderr
    seen = mini_sandbox(stack, tmp_path, "sh", "--", "cat /data/shared/cli-e2e/notes.txt")
    assert seen.stdout == "from the shell\n"
    assert mini_sandbox(stack, tmp_path, "files", "rm", "cli-e2e/notes.txt").returncode == 0


def test_sessions_are_the_caller_s_own(stack: Stack, tmp_path: Path) -> None:
    started = mini_sandbox(stack, tmp_path, "sessions", "start", "--json")
    assert started.returncode == 0, started.stderr
    kernel_id = json.loads(started.stdout)["id"]
    try:
        mine = json.loads(mini_sandbox(stack, tmp_path, "sessions", "ls", "--json").stdout)
        assert kernel_id in [session["id"] for session in mine]
        theirs = mini_sandbox(stack, tmp_path, "sessions", "ls", "--json", tenant="intruder")
        assert kernel_id not in [session["id"] for session in json.loads(theirs.stdout)]
        # Another tenant cannot run anything in it, nor stop it.
        intrude = mini_sandbox(
            stack, tmp_path, "sh", "--session", kernel_id, "--", "id", tenant="intruder"
        )
        assert intrude.returncode == 4 and "no such session" in intrude.stderr
        stop = mini_sandbox(stack, tmp_path, "sessions", "stop", kernel_id, tenant="intruder")
        assert stop.returncode == 4
        inside = mini_sandbox(stack, tmp_path, "sh", "--session", kernel_id, "--", "echo still")
        assert inside.stdout == "still\n"
    finally:
        assert mini_sandbox(stack, tmp_path, "sessions", "stop", kernel_id).returncode == 0


def test_status_reads_the_stack(stack: Stack, tmp_path: Path) -> None:
    done = mini_sandbox(stack, tmp_path, "status", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {report[name]["state"] for name in ("gateway", "notebook", "file_server")} == {"up"}
    gateway = report["gateway"]
    assert gateway["version"] == "0.1.0" and gateway["tenant"] == "e2e"
    assert gateway["pool"]["python3"]["target"] == 2
    assert gateway["kernels"]["yours"] >= 0 and gateway["kernels"]["total_limit"] > 0
