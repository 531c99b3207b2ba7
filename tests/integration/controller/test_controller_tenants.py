"""The controller on a gateway with tenants: it starts each session's kernel for the tenant its
namespace is mapped to (its own token may delegate), and that tenant, not another, then attaches
to ``status.kernelId`` with its own token."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from jupyter_kernel_client import GatewayKernelSession, KernelClientError
from testkit.gateway import Gateway
from testkit.kube import Cluster, Controller

from .conftest import NAMESPACE

TOKENS = {name: f"{name}-{uuid.uuid4().hex}" for name in ("controller", "alice", "bob")}


@pytest.fixture
def tenants_gateway(tmp_path: Path) -> Iterator[Gateway]:
    tenants = {name: {"token": token} for name, token in TOKENS.items()}
    tenants["controller"]["delegate"] = True
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps({"tenants": tenants}))
    gateway = Gateway(env={"SANDBOX_TENANTS_FILE": str(path)})
    gateway.start(wait=False)
    gateway.wait_ready(headers=auth("alice"))
    try:
        yield gateway
    finally:
        gateway.stop()


def auth(tenant: str) -> dict[str, str]:
    return {"Authorization": f"token {TOKENS[tenant]}"}


def test_a_sessions_kernel_belongs_to_its_namespaces_tenant(
    cluster: Cluster, tenants_gateway: Gateway, controllers: Callable[..., Controller]
) -> None:
    controllers(
        tenants_gateway.http,
        SANDBOX_GATEWAY_AUTH_TOKEN=TOKENS["controller"],
        SANDBOX_NAMESPACE_TENANTS=json.dumps({NAMESPACE: "alice"}),
    )
    cluster.create(NAMESPACE, "owned", {})
    status = cluster.wait_phase(NAMESPACE, "owned", "Ready")["status"]
    kernel_id = status["kernelId"]

    url = f"{tenants_gateway.http}/api/kernels/{kernel_id}"
    assert requests.get(url, headers=auth("alice"), timeout=10).status_code == 200
    assert requests.get(url, headers=auth("bob"), timeout=10).status_code == 404
    with GatewayKernelSession(
        status["gatewayUrl"],
        status["websocketUrl"],
        "python3",
        kernel_id=kernel_id,
        gateway_token=TOKENS["alice"],
    ) as session:
        assert str(session.execute("import os; os.environ['KERNEL_USERNAME']")) == "'alice'"
    with pytest.raises(KernelClientError):
        GatewayKernelSession(
            status["gatewayUrl"],
            status["websocketUrl"],
            "python3",
            kernel_id=kernel_id,
            gateway_token=TOKENS["bob"],
        ).start()

    # Deleting the session shuts the kernel down: the controller may drive its tenants' kernels.
    cluster.delete(NAMESPACE, "owned")
    deadline = time.monotonic() + 30
    while kernel_id in alices_kernels(tenants_gateway):
        assert time.monotonic() < deadline, "the session's kernel outlived the session"
        time.sleep(0.2)


def alices_kernels(gateway: Gateway) -> set[str]:
    listed = requests.get(f"{gateway.http}/api/kernels", headers=auth("alice"), timeout=10)
    return {str(k["id"]) for k in listed.json()}
