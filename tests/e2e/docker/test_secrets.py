"""No public secret in use: the stack has no default token, and test_env.sh makes a random one."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO, compose_command, unavailable

pytestmark = pytest.mark.integration


def env_value(env_file: Path, name: str) -> str:
    values = [
        line.split("=", 1)[1]
        for line in env_file.read_text().splitlines()
        if line.startswith(f"{name}=")
    ]
    assert len(values) == 1, values
    return values[0]


def run_secrets(workdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(workdir / "test_env.sh"), "--secrets"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_test_env_writes_a_random_token_once(tmp_path: Path) -> None:
    for name in ("test_env.sh", ".env.example"):
        shutil.copy(REPO / name, tmp_path / name)
    first = run_secrets(tmp_path)
    assert first.returncode == 0, first.stderr
    env_file = tmp_path / ".env"
    token = env_value(env_file, "FILE_SERVER_TOKEN")
    assert len(token) >= 40 and token != "local-dev-token"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert str(env_file) in first.stdout  # it says where the secrets are

    # A second run keeps it; a public default is replaced.
    assert run_secrets(tmp_path).returncode == 0
    assert env_value(env_file, "FILE_SERVER_TOKEN") == token
    env_file.write_text(env_file.read_text().replace(token, "local-dev-token"))
    assert run_secrets(tmp_path).returncode == 0
    assert env_value(env_file, "FILE_SERVER_TOKEN") not in ("local-dev-token", token)

    # Another install gets another token.
    other = tmp_path / "other"
    other.mkdir()
    for name in ("test_env.sh", ".env.example"):
        shutil.copy(REPO / name, other / name)
    assert run_secrets(other).returncode == 0
    assert env_value(other / ".env", "FILE_SERVER_TOKEN") != env_value(
        env_file, "FILE_SERVER_TOKEN"
    )


SECRETS = ("FILE_SERVER_TOKEN", "NOTEBOOK_GATEWAY_TOKEN", "SANDBOX_EGRESS_CONTROL_TOKEN")


@pytest.mark.parametrize("missing", SECRETS)
def test_compose_refuses_to_start_without_a_token(tmp_path: Path, missing: str) -> None:
    compose = compose_command()
    if compose is None:
        unavailable("no docker-compose / docker compose")
    present = set(SECRETS) - {missing}
    env_file = tmp_path / "one-missing.env"
    env_file.write_text("".join(f"{name}=set-{name}\n" for name in present))
    env = {k: v for k, v in os.environ.items() if k not in (missing, *present)}
    done = subprocess.run(
        [*compose, "--env-file", str(env_file), "-f", str(REPO / "docker-compose.yaml"), "config"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert f"{missing} is not set" in done.stderr + done.stdout
    assert "test_env.sh" in done.stderr + done.stdout


def test_test_env_writes_the_gateway_tenants_from_env(tmp_path: Path) -> None:
    for name in ("test_env.sh", ".env.example"):
        shutil.copy(REPO / name, tmp_path / name)
    assert run_secrets(tmp_path).returncode == 0
    env_file = tmp_path / ".env"
    tokens = {
        name: env_value(env_file, name)
        for name in ("JUPYTER_GATEWAY_AUTH_TOKEN", "NOTEBOOK_GATEWAY_TOKEN")
    }
    assert all(len(token) >= 40 for token in tokens.values())
    assert len(set(tokens.values())) == 2
    tenants_file = tmp_path / ".sandbox" / "tenants.json"
    assert stat.S_IMODE(tenants_file.stat().st_mode) == 0o600
    assert json.loads(tenants_file.read_text()) == {
        "tenants": {
            "local": {"token": tokens["JUPYTER_GATEWAY_AUTH_TOKEN"], "metrics": True},
            "notebook": {"token": tokens["NOTEBOOK_GATEWAY_TOKEN"]},
        }
    }
    # A token changed in .env is the gateway's on the next run; the file is rewritten.
    env_file.write_text(env_file.read_text().replace(tokens["NOTEBOOK_GATEWAY_TOKEN"], "n" * 43))
    assert run_secrets(tmp_path).returncode == 0
    assert json.loads(tenants_file.read_text())["tenants"]["notebook"]["token"] == "n" * 43
