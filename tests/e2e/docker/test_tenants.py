"""Tenants on the compose stack, through Docker's published port: one tenant's kernels are
invisible and unreachable to another, one id is one kernel container, and the notebook is a
tenant of its own.

The stack's tenants file (conftest) holds "e2e" (the tests), "intruder" (at most
``INTRUDER_MAX`` kernels) and "notebook" (the notebook server).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import websocket

from jupyter_kernel_client import GatewayKernelSession
from testkit.concurrent import at_once

from .conftest import GATEWAY_TOKENS, INTRUDER_MAX, POOL, Stack, docker

pytestmark = pytest.mark.integration


def api(stack: Stack, tenant: str | None, method: str, path: str, **kwargs: Any) -> Any:
    headers = {"Authorization": f"token {GATEWAY_TOKENS[tenant]}"} if tenant else {}
    return requests.request(
        method, stack.gateway_http + path, headers=headers, timeout=120, **kwargs
    )


def ws_status(stack: Stack, tenant: str, kernel_id: str) -> int:
    try:
        conn = websocket.create_connection(
            f"{stack.gateway_ws}/api/kernels/{kernel_id}/channels",
            header=[f"Authorization: token {GATEWAY_TOKENS[tenant]}"],
            timeout=30,
        )
    except websocket.WebSocketBadStatusException as exc:
        return int(exc.status_code)
    conn.close()
    return 101


def containers_of(kernel_id: str) -> list[str]:
    """Every container (running or not) labelled with this kernel id."""
    return docker("ps", "-aq", "--filter", f"label=kernel_id={kernel_id}").split()


def delete_all(stack: Stack, tenant: str) -> None:
    for kernel in api(stack, tenant, "GET", "/api/kernels").json():
        api(stack, tenant, "DELETE", f"/api/kernels/{kernel['id']}")


@pytest.fixture
def victim(stack: Stack) -> Iterator[GatewayKernelSession]:
    with GatewayKernelSession(stack.gateway_http, stack.gateway_ws, "python3") as session:
        session.execute("secret = 'only e2e may read this'")
        yield session


def test_a_request_without_a_token_is_401(stack: Stack) -> None:
    for method, path in (("GET", "/api/kernels"), ("POST", "/api/kernels")):
        answer = api(stack, None, method, path, json={"name": "python3"})
        assert answer.status_code == 401, answer.text
    assert api(stack, None, "GET", "/metrics").status_code == 401


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("POST", "/interrupt"), ("POST", "/restart"), ("DELETE", "")],
)
def test_another_tenant_meets_a_kernel_as_an_unknown_id(
    stack: Stack, victim: GatewayKernelSession, method: str, suffix: str
) -> None:
    kernel_id, unknown = str(victim.kernel_id), str(uuid.uuid4())
    assert kernel_id not in {k["id"] for k in api(stack, "intruder", "GET", "/api/kernels").json()}
    probe = api(stack, "intruder", method, f"/api/kernels/{kernel_id}{suffix}")
    control = api(stack, "intruder", method, f"/api/kernels/{unknown}{suffix}")
    assert probe.status_code == control.status_code == 404
    assert probe.json()["message"] == control.json()["message"].replace(unknown, kernel_id)
    assert ws_status(stack, "intruder", kernel_id) == ws_status(stack, "intruder", unknown) == 404
    # Nothing reached the kernel: its state is as its owner left it.
    assert str(victim.execute("secret")) == "'only e2e may read this'"
    assert len(containers_of(kernel_id)) == 1


def test_the_notebooks_kernels_are_the_notebooks(stack: Stack) -> None:
    notebook = stack.notebook_api()
    started = notebook.post(
        f"{stack.notebook_url}/api/kernels", json={"name": "python3"}, timeout=120
    )
    assert started.status_code == 201, started.text
    kernel_id = started.json()["id"]
    try:
        assert kernel_id not in {k["id"] for k in api(stack, "e2e", "GET", "/api/kernels").json()}
        assert api(stack, "intruder", "GET", f"/api/kernels/{kernel_id}").status_code == 404
        assert api(stack, "notebook", "GET", f"/api/kernels/{kernel_id}").status_code == 200
    finally:
        notebook.delete(f"{stack.notebook_url}/api/kernels/{kernel_id}", timeout=120)


@pytest.mark.parametrize("kernelspec", ["python3", "sandbox-python"], ids=["warm", "cold"])
def test_concurrent_starts_with_one_id_from_two_tenants_make_one_container(
    stack: Stack, kernelspec: str
) -> None:
    """Seen before: two warm claims with one id both 201 (two tenants sharing one kernel), and
    cold ones each launching a container onto the same private network."""
    kernel_id, attempts = str(uuid.uuid4()), 6

    def race(n: int) -> tuple[str, requests.Response]:
        tenant = ("e2e", "intruder")[n % 2]
        body = {"name": kernelspec, "env": {"KERNEL_ID": kernel_id}}
        return tenant, api(stack, tenant, "POST", "/api/kernels", json=body)

    answers = at_once(attempts, race)
    try:
        statuses = sorted(answer.status_code for _, answer in answers)
        assert statuses == [201] + [409] * (attempts - 1), statuses
        winner = next(tenant for tenant, answer in answers if answer.status_code == 201)
        loser = "intruder" if winner == "e2e" else "e2e"
        assert api(stack, loser, "GET", f"/api/kernels/{kernel_id}").status_code == 404
        # Every kernel container is a pooled one or a listed kernel's: none runs unmapped.
        stack.wait_pools_ready()
        listed = [k for t in GATEWAY_TOKENS for k in api(stack, t, "GET", "/api/kernels").json()]
        assert len(stack.kernel_container_ids()) == sum(POOL.values()) + len(listed)
        if kernelspec == "sandbox-python":  # a cold container carries the kernel's id
            assert len(containers_of(kernel_id)) == 1
    finally:
        for tenant in ("e2e", "intruder"):
            api(stack, tenant, "DELETE", f"/api/kernels/{kernel_id}")


def test_a_tenants_cap_holds_under_concurrent_starts(stack: Stack) -> None:
    attempts = INTRUDER_MAX + 3
    answers = at_once(
        attempts, lambda _: api(stack, "intruder", "POST", "/api/kernels", json={"name": "python3"})
    )
    try:
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [201] * INTRUDER_MAX + [403] * (attempts - INTRUDER_MAX), statuses
        kernels = api(stack, "intruder", "GET", "/api/kernels").json()
        assert len(kernels) == INTRUDER_MAX
        assert all(len(containers_of(k["id"])) == 1 for k in kernels)
    finally:
        delete_all(stack, "intruder")
