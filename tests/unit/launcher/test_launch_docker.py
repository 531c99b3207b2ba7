"""The project's kernel launcher: what reaches the kernel container, and its hardening."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

LAUNCHER = Path(__file__).resolve().parents[3] / "kernels" / "launcher" / "launch_docker.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("launch_docker", LAUNCHER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["launch_docker"] = module
    spec.loader.exec_module(module)
    return module


launch_docker = _load()

GATEWAY_ENV = {
    "PATH": "/opt/eg/bin:/usr/bin",
    "EG_DOCKER_NETWORK": "sandbox-kernels",
    "EG_DOCKER_MODE": "docker",
    "EG_AUTH_TOKEN": "gateway-secret",
    "AWS_SECRET_ACCESS_KEY": "cloud-secret",
    "SANDBOX_SHARED_VOLUME": "shared-vol",
    "KERNEL_USERNAME": "alice",
    "KERNEL_ID": "k-1",
    "KERNEL_IMAGE": "mini-jupyter-sandbox/kernel-python:0.1.0",
    "KERNEL_UID": "0",
    "KERNEL_WORKING_DIR": "/",
    "KERNEL_EXTRA_SETTING": "client value",
}


def _kernel_env(env: dict[str, str]) -> dict[str, str]:
    return dict(
        launch_docker.kernel_environment(
            env,
            kernel_id="k-1",
            port_range="0..0",
            response_address="sandbox-gateway:8877",
            public_key="PUBKEY",
            kernel_class_name=None,
            transport_encryption=None,
        )
    )


def test_kernel_gets_only_what_it_needs() -> None:
    env = _kernel_env(GATEWAY_ENV)
    assert env == {
        "KERNEL_ID": "k-1",
        "KERNEL_USERNAME": "alice",
        "KERNEL_EXTRA_SETTING": "client value",
        "PORT_RANGE": "0..0",
        "RESPONSE_ADDRESS": "sandbox-gateway:8877",
        "PUBLIC_KEY": "PUBKEY",
        "KERNEL_SPARK_CONTEXT_INIT_MODE": "none",
    }


def test_container_is_hardened() -> None:
    spec = launch_docker.container_spec(
        GATEWAY_ENV, kernel_id="k-1", image="img", kernel_env=_kernel_env(GATEWAY_ENV)
    )
    host = spec["HostConfig"]
    assert spec["User"] == "1000:100"  # KERNEL_UID=0 from the client is ignored
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["ReadonlyRootfs"] is True
    assert set(host["Tmpfs"]) == {"/tmp", "/home/jovyan"}
    assert host["PidsLimit"] == 256
    assert host["Memory"] == host["MemorySwap"] == 512 * 1024**2
    assert host["NanoCpus"] == 1_000_000_000
    assert host["NetworkMode"] == "sandbox-kernels"
    assert host["Mounts"] == [{"Type": "volume", "Source": "shared-vol", "Target": "/data/shared"}]
    assert spec["Labels"]["kernel_id"] == "k-1"
    assert spec["WorkingDir"] == "/home/jovyan"
    assert not any("docker.sock" in str(value) for value in host.values())


def test_limits_come_from_the_gateway_environment() -> None:
    env = {
        **GATEWAY_ENV,
        "SANDBOX_KERNEL_MEMORY": "1g",
        "SANDBOX_KERNEL_CPUS": "0.5",
        "SANDBOX_KERNEL_PIDS": "64",
    }
    host = launch_docker.container_spec(env, kernel_id="k", image="i", kernel_env={})["HostConfig"]
    assert host["Memory"] == 1024**3
    assert host["NanoCpus"] == 500_000_000
    assert host["PidsLimit"] == 64


@pytest.mark.parametrize("user", ["0", "0:0", "root", "1000:abc"])
def test_root_or_malformed_kernel_user_is_refused(user: str) -> None:
    env = {**GATEWAY_ENV, "SANDBOX_KERNEL_USER": user}
    with pytest.raises(launch_docker.LaunchError):
        launch_docker.container_spec(env, kernel_id="k", image="i", kernel_env={})


def test_client_username_cannot_inject_into_the_container_name() -> None:
    env = {**GATEWAY_ENV, "KERNEL_USERNAME": "../evil name;rm -rf"}
    spec = launch_docker.container_spec(env, kernel_id="k-1", image="i", kernel_env={})
    assert spec["_name"].endswith("-k-1")
    assert all(ch.isalnum() or ch in "_.-" for ch in spec["_name"])


def test_image_not_allowed_is_refused_before_docker_is_touched(
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {**GATEWAY_ENV, "KERNEL_IMAGE": "alpine:latest", "SANDBOX_DOCKER_SOCKET": "/nonexistent"}
    argv = [
        "--kernel-id",
        "k-1",
        "--response-address",
        "gw:1",
        "--public-key",
        "K",
        "--image",
        "mini-jupyter-sandbox/kernel-python:0.1.0",
    ]
    assert launch_docker.main(argv, env) == 2
    assert "not allowed" in capsys.readouterr().err


def test_swarm_mode_is_refused() -> None:
    env = {**GATEWAY_ENV, "EG_DOCKER_MODE": "swarm"}
    argv = ["--kernel-id", "k-1", "--response-address", "gw:1", "--public-key", "K"]
    assert launch_docker.main(argv, env) == 2


@pytest.mark.parametrize(("text", "size"), [("512m", 512 * 1024**2), ("1g", 1024**3), ("100", 100)])
def test_parse_size(text: str, size: int) -> None:
    assert launch_docker.parse_size(text) == size
