"""The warm pool's rules (``sandbox_gateway.pool.rules``): settings, which requests
go cold and why, and the code a claim runs inside the kernel.  The pool itself runs against a real
gateway in ``tests/integration/gateway/test_pool.py`` and on Docker in the e2e suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox_gateway.launchers import rules
from sandbox_gateway.pool import rules as pool

REPO = Path(__file__).resolve().parents[3]
IMAGE = "mini-jupyter-sandbox/kernel-python:0.1.0"


def test_settings_read_sizes_and_drop_empty_entries() -> None:
    settings = pool.PoolSettings.from_env(
        {"SANDBOX_POOL": " python3=2, sandbox-python=0,r.x_1=3 ,", "SANDBOX_POOL_MAX_AGE": "60"}
    )
    assert dict(settings.sizes) == {"python3": 2, "r.x_1": 3}
    assert (settings.total, settings.max_age, settings.check_interval) == (5, 60.0, 10.0)
    assert dict(pool.PoolSettings.from_env({}).sizes) == {}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SANDBOX_POOL": "python3"}, "kernelspec=size"),
        ({"SANDBOX_POOL": "python3=-1"}, "kernelspec=size"),
        ({"SANDBOX_POOL": "python3=1.5"}, "kernelspec=size"),
        ({"SANDBOX_POOL": "../x=1"}, "kernelspec=size"),
        ({"SANDBOX_POOL": "python3=1,python3=2"}, "twice"),
        ({"SANDBOX_POOL_MAX_AGE": "0"}, "SANDBOX_POOL_MAX_AGE"),
        ({"SANDBOX_POOL_CHECK_INTERVAL": "inf"}, "SANDBOX_POOL_CHECK_INTERVAL"),
        ({"SANDBOX_POOL_CHECK_INTERVAL": "soon"}, "SANDBOX_POOL_CHECK_INTERVAL"),
    ],
)
def test_bad_settings_are_refused_with_the_reason(env: dict[str, str], message: str) -> None:
    with pytest.raises(pool.SettingsError, match=message):
        pool.PoolSettings.from_env(env)


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({}, None),
        ({"KERNEL_USERNAME": "alice", "KERNEL_PROJECT": "x", "KERNEL_WORKING_DIR": "/tmp"}, None),
        ({"KERNEL_ID": "8c1f4a70-3d1e-4b8e-9d0a-2f1b6c7d8e9f"}, None),
        ({"KERNEL_LAUNCH_TIMEOUT": "30"}, None),
        ({"KERNEL_IMAGE": IMAGE}, None),
        ({"KERNEL_IMAGE": "other/image:1"}, "image"),
        ({"KERNEL_EXECUTOR_IMAGE": "other/image:1"}, "image"),
        ({"KERNEL_MEMORY": "1g"}, "resources"),
        ({"KERNEL_CPUS_LIMIT": "2"}, "resources"),
        ({"KERNEL_GPUS": "1"}, "resources"),
        ({"KERNEL_UID": "0"}, "identity"),
        ({"KERNEL_VOLUME_MOUNTS": "[]"}, "mounts"),
        ({"KERNEL_SERVICE_ACCOUNT_NAME": "admin"}, "placement"),
        # What the gateway passes every kernel (inherited) is what the pooled ones got too.
        ({"KERNEL_NAMESPACE": "kernels"}, None),
        ({"KERNEL_NAMESPACE": "elsewhere"}, "placement"),
    ],
)
def test_which_requests_go_cold(env: dict[str, str], reason: str | None) -> None:
    pooled_env = {"KERNEL_NAMESPACE": "kernels", "SANDBOX_KERNEL_MEMORY": "512m"}
    assert pool.cold_reason(env, pooled_env, IMAGE) == reason


def test_a_claim_sets_no_variable_that_steers_a_launch_and_the_listed_client_ones() -> None:
    """A claim sets what a cold start would (the launchers' rule, ``launchers.rules``; that the
    launchers themselves pass the same is tested in ``tests/unit/launcher/test_rules.py``)."""
    env = {name: "steers" for name in rules.LAUNCH_CONTROL_VARS}
    env.update(KERNEL_PROJECT="demo", DATASET="in.csv", UNLISTED="x")
    assert pool.kernel_variables(env, "id-1", "alice", client_envs={"DATASET"}) == {
        "KERNEL_PROJECT": "demo",
        "DATASET": "in.csv",
        "KERNEL_ID": "id-1",
        "KERNEL_USERNAME": "alice",
    }


def test_kernel_variables_are_what_a_cold_start_passes_into_the_kernel() -> None:
    env = {
        "KERNEL_PROJECT": "demo",
        "KERNEL_USERNAME": "ignored-here",
        "KERNEL_ID": "ignored-too",
        "KERNEL_WORKING_DIR": "/data/shared",
        "KERNEL_LAUNCH_TIMEOUT": "30",
        "KERNEL_NAMESPACE": "kernels",
        "SANDBOX_KERNEL_MEMORY": "512m",
        "PATH": "/usr/bin",
    }
    assert pool.kernel_variables(env, "id-1", "alice") == {
        "KERNEL_PROJECT": "demo",
        "KERNEL_USERNAME": "alice",
        "KERNEL_ID": "id-1",
        "KERNEL_WORKING_DIR": "/data/shared",
    }
    assert "KERNEL_WORKING_DIR" not in pool.kernel_variables(env, "i", "u", working_dir=False)


def test_the_claim_code_sets_values_literally_and_runs_nothing_else(tmp_path: Path) -> None:
    """Values are client input: quotes, newlines and code in them stay data."""
    hostile = "x'); import os; os.system('touch PWNED'); ('\n\"\"\"\\"
    variables = {"KERNEL_PROJECT": hostile, "KERNEL_ID": "k", "KERNEL_WORKING_DIR": str(tmp_path)}
    script = pool.claim_code(variables) + (
        "\nimport os, json, subprocess\n"
        "print(json.dumps([os.environ['KERNEL_PROJECT'], os.getcwd(),"
        " subprocess.run(['sh', '-c', 'printf %s \"$KERNEL_PROJECT\"'],"
        " capture_output=True, text=True).stdout, '_sandbox_os' in dir()]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=True
    )
    import json

    assert json.loads(done.stdout) == [hostile, str(tmp_path), hostile, False]
    assert not (REPO / "PWNED").exists() and not (tmp_path / "PWNED").exists()


def test_a_missing_working_directory_is_ignored() -> None:
    script = (
        pool.claim_code({"KERNEL_WORKING_DIR": "/no/such/dir"}) + "\nimport os; print(os.getcwd())"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd="/", check=True
    )
    assert done.stdout.strip() == "/"
    assert os.environ.get("KERNEL_WORKING_DIR") is None  # nothing leaked into this process


def test_the_bash_claim_code_sets_values_literally(tmp_path: Path) -> None:
    hostile = "x'; touch PWNED; echo '\n$(touch PWNED2)`touch PWNED3`\\"
    variables = {"KERNEL_PROJECT": hostile, "KERNEL_WORKING_DIR": str(tmp_path)}
    script = pool.claim_code(variables, "bash") + '\nprintf "%s|%s" "$KERNEL_PROJECT" "$PWD"'
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    assert done.stdout == f"{hostile}|{tmp_path}"
    assert sorted(path.name for path in tmp_path.iterdir()) == []


@pytest.mark.parametrize("language", ["javascript", "typescript", "R"])
def test_every_shipped_language_has_claim_code(language: str) -> None:
    code = pool.claim_code({"KERNEL_PROJECT": 'a"b\n', "KERNEL_WORKING_DIR": "/d"}, language)
    assert "KERNEL_PROJECT" in code and '"a\\"b\\n"' in code and '"/d"' in code


def test_a_language_without_claim_code_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot claim a kernel of language 'cobol'"):
        pool.claim_code({}, "cobol")
