"""The rules both kernel launchers and the gateway share (``sandbox_gateway.launchers.rules``),
and that each of them applies that one rule, not a copy of it."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from sandbox_gateway.admission import limits
from sandbox_gateway.launchers import docker, kubernetes, rules
from sandbox_gateway.pool import rules as pool

KERNEL_ID = "0f6e7c2a-1b2c-4d5e-8f90-123456789abc"
# A launch's environment at its worst: EG 3.3 hands a launcher the gateway's whole environment
# when a start request carries no env, and a client chooses every KERNEL_* value.
LAUNCH_ENV = {
    "EG_AUTH_TOKEN": "gateway-secret",
    "PATH": "/usr/bin",
    "SANDBOX_KERNEL_MEMORY": "512m",
    "DATASET": "in.csv",
    "UNLISTED": "dropped",
    "KERNEL_USERNAME": "alice",
    "KERNEL_PROJECT": "demo",
    "KERNEL_WORKING_DIR": "/data/shared",
    "KERNEL_lower": "not a kernel variable name",
    "KERNEL_": "no name at all",
    **{name: "steers the launch" for name in rules.LAUNCH_CONTROL_VARS},
}
KEPT = {
    "KERNEL_USERNAME": "alice",
    "KERNEL_PROJECT": "demo",
    "KERNEL_WORKING_DIR": "/data/shared",
}


@pytest.mark.parametrize(
    ("text", "size"),
    [("512m", 512 * 1024**2), ("1g", 1024**3), ("100", 100), ("64K", 64 * 1024), (" 2b ", 2)],
)
def test_sizes_are_read_in_dockers_units(text: str, size: int) -> None:
    assert rules.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-1m", "1.5g", "1t", "1mb", "64m,exec"])
def test_a_malformed_size_is_refused_with_its_text(text: str) -> None:
    with pytest.raises(rules.RuleError, match=r"invalid size .* \(expected e\.g\. 512m, 1g\)"):
        rules.parse_size(text)


def test_the_gateway_and_the_docker_launcher_read_sizes_by_the_one_rule() -> None:
    # The gateway counts kernels by the memory the launcher gives each: they must agree.
    assert limits.parse_size("3g") == rules.parse_size("3g")
    with pytest.raises(limits.SettingsError, match="invalid size 'lots'"):
        limits.parse_size("lots")
    with pytest.raises(docker.LaunchError, match="SANDBOX_KERNEL_TMP_SIZE: invalid size"):
        docker.Settings.from_env({"SANDBOX_KERNEL_TMP_SIZE": "64m,exec"})
    assert limits.MIN_KERNEL_MEMORY == rules.MIN_KERNEL_MEMORY == 64 * 1024**2
    for name, value in (("SANDBOX_KERNEL_MEMORY", "63m"), ("SANDBOX_KERNEL_MEMORY", "0")):
        with pytest.raises(limits.SettingsError, match="at least 64m"):
            limits.LimitSettings.from_env({name: value, "SANDBOX_MAX_KERNELS": "1"})
        with pytest.raises(docker.LaunchError, match="at least 64m"):
            docker.Settings.from_env({name: value})


@pytest.mark.parametrize("kernel_id", [KERNEL_ID, KERNEL_ID.replace("-", ""), KERNEL_ID.upper()])
def test_kernel_ids_as_enterprise_gateway_makes_them_pass(kernel_id: str) -> None:
    assert rules.check_kernel_id(kernel_id) == kernel_id


@pytest.mark.parametrize(
    "kernel_id", ["", "k-1", "../../x", KERNEL_ID + "0", KERNEL_ID[:-5], f"{KERNEL_ID}\n", "0" * 64]
)
def test_any_other_kernel_id_is_refused(kernel_id: str) -> None:
    with pytest.raises(rules.RuleError) as refused:
        rules.check_kernel_id(kernel_id)
    assert str(refused.value) == f"invalid kernel id {kernel_id!r}"


def test_a_kernel_keeps_its_kernel_variables_and_the_listed_client_ones_only() -> None:
    assert rules.request_variables(LAUNCH_ENV) == KEPT
    assert rules.request_variables(LAUNCH_ENV, {"DATASET", "ABSENT"}) == {
        **KEPT,
        "DATASET": "in.csv",
    }


def test_what_steers_a_launch_never_reaches_the_kernel() -> None:
    assert {"KERNEL_IMAGE", "KERNEL_UID", "KERNEL_NAMESPACE"} <= rules.LAUNCH_CONTROL_VARS
    assert not rules.LAUNCH_CONTROL_VARS & rules.request_variables(LAUNCH_ENV).keys()
    assert "KERNEL_WORKING_DIR" not in rules.LAUNCH_CONTROL_VARS  # the bootstrap's cd


def test_client_env_names_are_the_valid_names_of_the_list() -> None:
    names = rules.client_env_names("DATASET,,_X1,1BAD,BAD-NAME,MODEL_DIR")
    assert names == {"DATASET", "_X1", "MODEL_DIR"}
    assert rules.client_env_names("") == frozenset()


def _docker_kernel_env(env: dict[str, str]) -> dict[str, str]:
    return docker.kernel_environment(
        env,
        kernel_id=KERNEL_ID,
        port_range="0..0",
        response_address="gw:8877",
        public_key="K",
        kernel_class_name=None,
        transport_encryption=None,
    )


def _kubernetes_kernel_env(env: dict[str, str]) -> dict[str, str]:
    args = argparse.Namespace(
        kernel_id=KERNEL_ID,
        response_address="gw:8877",
        public_key="K",
        port_range="0..0",
        kernel_class_name="",
    )
    return {e["name"]: e["value"] for e in kubernetes.kernel_environment(env, args)}


def test_a_cold_kernel_on_either_backend_and_a_claimed_warm_one_get_the_same_variables() -> None:
    """One rule: a Docker kernel, a Kubernetes kernel and a pooled kernel claimed for the request
    are given the same variables from it (besides what each bootstrap needs)."""
    env = {**LAUNCH_ENV, "SANDBOX_CLIENT_ENVS": "DATASET"}
    warm = pool.kernel_variables(env, KERNEL_ID, "alice", client_envs={"DATASET"})
    bootstrap = {"KERNEL_ID", "PORT_RANGE", "RESPONSE_ADDRESS", "PUBLIC_KEY"}
    docker_env = _docker_kernel_env(env)
    kubernetes_env = _kubernetes_kernel_env(env)
    assert (
        docker_env.keys() - bootstrap - {"KERNEL_SPARK_CONTEXT_INIT_MODE"}
        == kubernetes_env.keys() - bootstrap
        == warm.keys() - {"KERNEL_ID"}
        == {*KEPT, "DATASET"}
    )
    for kernel_env in (docker_env, kubernetes_env):
        assert {name: kernel_env[name] for name in warm if name != "KERNEL_ID"} == {
            **KEPT,
            "DATASET": "in.csv",
        }


@pytest.mark.parametrize(
    ("user", "name"),
    [
        ("alice", f"alice-{KERNEL_ID}"),
        ("../evil name;rm -rf", f"evil-name-rm--rf-{KERNEL_ID}"),
        ("...", f"kernel-{KERNEL_ID}"),
        ("a" * 40, f"{'a' * 32}-{KERNEL_ID}"),
    ],
)
def test_a_kernels_container_is_named_after_its_user_cleaned(user: str, name: str) -> None:
    assert rules.container_name(user, KERNEL_ID) == name
    # A cold start names it so; the Docker proxy renames a claimed warm one the same way.
    assert docker.container_name({"KERNEL_USERNAME": user}, KERNEL_ID) == name


def test_the_rules_load_in_an_isolated_interpreter_without_the_gateway() -> None:
    """The launchers run as ``python -I -m``: the rules import no Enterprise Gateway, nor
    anything of the project beyond themselves."""
    code = (
        "import sys, sandbox_gateway.launchers.rules as r; r.parse_size('1g');"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('sandbox_gateway', 'enterprise_gateway', 'traitlets', 'tornado')))"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == str(
        ["sandbox_gateway", "sandbox_gateway.launchers", "sandbox_gateway.launchers.rules"]
    )
