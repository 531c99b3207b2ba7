"""Every variable an example SandboxSession sets in ``spec.env`` reaches its kernel.

A name that is not ``KERNEL_*`` passes only where the chart lists it in ``gateway.clientEnvs``;
elsewhere it is dropped without an error, so an example must either use names that pass with
the chart's defaults or say, in a ``--set 'gateway.clientEnvs={...}'`` comment, what to install
with.  Each example goes the whole way with the values it names: the controller's launch
environment, Enterprise Gateway's filter (EG_CLIENT_ENVS of the rendered gateway), the rendered
kernelspec's env, and the Kubernetes launcher's choice of the kernel container's variables.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_testlib import REPO_ROOT, one, render_docs

from controller.reconcile import launch_env, session_of
from controller.settings import ControllerSettings
from sandbox_gateway.launchers import kubernetes as launcher

pytestmark = pytest.mark.unit

EXAMPLES = sorted((REPO_ROOT / "examples" / "k8s").glob("*.yaml"))
CLIENT_ENVS = re.compile(r"--set '?gateway\.clientEnvs=\{([^}]*)\}'?")
KERNEL_ID = "0f9e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e6f"


def eg_client_filter(env: dict[str, str], client_envs: set[str]) -> dict[str, str]:
    """What Enterprise Gateway 3.3 keeps of a start request's env (its kernels handler: KERNEL_*
    names, and those of EG_CLIENT_ENVS)."""
    return {k: v for k, v in env.items() if k.startswith("KERNEL_") or k in client_envs}


def kernel_variables(example: Path) -> tuple[dict[str, str], set[str]]:
    """(spec.env of the example, the names its kernel container gets) with the values it names."""
    text = example.read_text()
    session = yaml.safe_load(text)
    named = [m.split(",") for m in CLIENT_ENVS.findall(text)]
    values: dict[str, Any] = {}
    if named:
        values = {"gateway": {"clientEnvs": sorted({n.strip() for ns in named for n in ns})}}
    docs = render_docs(values)

    gateway = one(docs, "Deployment", "-gateway")["spec"]["template"]["spec"]["containers"][0]
    eg_client_envs = {
        name
        for e in gateway["env"]
        if e["name"] == "EG_CLIENT_ENVS"
        for name in e.get("value", "").split(",")
        if name
    }
    kernel_name = session["spec"].get("kernelName", "python3")
    configmap = one(docs, "ConfigMap", "-kernelspecs")["data"]
    kernelspec = json.loads(configmap[f"{kernel_name}.kernel.json"])

    meta = {**session["metadata"], "namespace": "team", "uid": "3b1f0c9e-0000-4000-8000-1a2b3c4d"}
    sent = launch_env(session_of(meta, session["spec"], ControllerSettings()), ControllerSettings())
    # EG adds the kernelspec's env to what it kept of the request's before it runs the launcher.
    env = {**eg_client_filter(sent, eg_client_envs), **kernelspec["env"]}
    args = launcher.parse_args(
        [
            *("--kernel-id", KERNEL_ID, "--response-address", "10.1.2.3:8877"),
            *("--public-key", "KEY", "--pod-template", "unused", "--image", "kernel:1"),
            *("--max-cpu", "2", "--max-memory", "4Gi"),
        ]
    )
    return session["spec"].get("env") or {}, {
        e["name"] for e in launcher.kernel_environment(env, args)
    }


def test_every_example_is_checked() -> None:
    assert any(yaml.safe_load(p.read_text())["spec"].get("env") for p in EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_each_spec_env_variable_reaches_the_kernel(example: Path) -> None:
    wanted, received = kernel_variables(example)
    missing = sorted(set(wanted) - received)
    assert not missing, (
        f"{example.name}: {missing} would not reach the kernel; use KERNEL_* names or say in a "
        "comment: --set 'gateway.clientEnvs={...}'"
    )


def test_a_name_the_chart_does_not_list_is_dropped(tmp_path: Path) -> None:
    """What the examples' comment is for: without clientEnvs, DATASET never arrives."""
    example = tmp_path / "unlisted.yaml"
    example.write_text(
        "apiVersion: minisandbox.dev/v1alpha1\nkind: SandboxSession\nmetadata:\n  name: x\n"
        "spec:\n  env:\n    DATASET: /data/shared/a.csv\n    KERNEL_PROJECT: p\n"
    )
    _, received = kernel_variables(example)
    assert "KERNEL_PROJECT" in received and "DATASET" not in received
