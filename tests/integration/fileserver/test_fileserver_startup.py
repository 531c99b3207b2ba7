"""Start-up behaviour: refusing to run unauthenticated by accident, and the console entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.fileserver.fileserver_harness import (
    REPO,
    FileServer,
    free_port,
    launch,
    server_env,
    wait_healthy,
)

pytestmark = pytest.mark.integration

UVICORN = [sys.executable, "-m", "uvicorn", "fileserver.app:app", "--host", "127.0.0.1"]


def _run_to_exit(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({}, "FILE_SERVER_TOKEN is not set"),
        ({"FILE_SERVER_TOKEN": ""}, "FILE_SERVER_TOKEN is not set"),
        ({"FILE_SERVER_AUTH_DISABLED": "false"}, "FILE_SERVER_TOKEN is not set"),
        (
            {"FILE_SERVER_TOKEN": "t0ken-with-newline\n"},
            "must be printable ASCII without whitespace",
        ),
        (
            {"FILE_SERVER_TOKEN": "s3cret-token-value", "FILE_SERVER_AUTH_DISABLED": "true"},
            "both set",
        ),
    ],
    ids=["unset", "empty", "disabled-false", "whitespace", "token-and-disabled"],
)
@pytest.mark.parametrize("entry", ["uvicorn", "console"])
def test_refuses_to_start_without_a_usable_token(
    tmp_path: Path, settings: dict[str, str], reason: str, entry: str
) -> None:
    port = free_port()
    env = server_env(SHARED_DATA_DIR=str(tmp_path), **settings)
    argv = (
        [*UVICORN, "--port", str(port)]
        if entry == "uvicorn"
        else [sys.executable, "-m", "fileserver", "--port", str(port)]
    )
    result = _run_to_exit(argv, env)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert reason in output
    # The refusal must not echo the rejected secret.
    assert "s3cret-token-value" not in output and "t0ken-with-newline" not in output


def test_refuses_a_missing_root(tmp_path: Path) -> None:
    env = server_env(SHARED_DATA_DIR=str(tmp_path / "missing"), FILE_SERVER_TOKEN="tok")
    result = _run_to_exit([*UVICORN, "--port", str(free_port())], env)
    assert result.returncode != 0
    assert "is not an existing directory" in result.stdout + result.stderr


def _serve(argv: list[str], env: dict[str, str], root: Path, port: int, log: Path) -> FileServer:
    process = launch(argv, env, log)
    server = FileServer(root, env.get("FILE_SERVER_TOKEN", ""), port, log, process, env)
    try:
        wait_healthy(process, port, log)
    except BaseException:
        server.stop()
        raise
    return server


def test_auth_can_be_disabled_explicitly(tmp_path: Path) -> None:
    (tmp_path / "open.txt").write_bytes(b"no token needed")
    port = free_port()
    env = server_env(SHARED_DATA_DIR=str(tmp_path), FILE_SERVER_AUTH_DISABLED="true")
    server = _serve([*UVICORN, "--port", str(port)], env, tmp_path, port, tmp_path.parent / "l")
    try:
        response = server.request("GET", "/files/open.txt", token=False)
        assert (response.status, response.body) == (200, b"no token needed")
        assert "authentication disabled" in server.log_text()
    finally:
        server.stop()


def test_console_entry_point_serves(tmp_path: Path) -> None:
    port = free_port()
    env = server_env(
        SHARED_DATA_DIR=str(tmp_path),
        FILE_SERVER_TOKEN="console-token",
        FILE_SERVER_MAX_UPLOAD_BYTES="10",
    )
    argv = [sys.executable, "-m", "fileserver", "--host", "127.0.0.1", "--port", str(port)]
    server = _serve(argv, env, tmp_path, port, tmp_path.parent / "console.log")
    try:
        assert server.request("PUT", "/files/a.txt", body=b"0123456789").status == 201
        assert server.request("PUT", "/files/b.txt", body=b"0123456789X").status == 413
        assert server.request("GET", "/files/a.txt", token=False).status == 401
    finally:
        server.stop()
    assert (tmp_path / "a.txt").read_bytes() == b"0123456789"
    assert not (tmp_path / "b.txt").exists()


def test_console_script_target_is_main() -> None:
    # pyproject declares mini-sandbox-fileserver = "fileserver.__main__:main".
    from fileserver.__main__ import main

    assert callable(main)
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
