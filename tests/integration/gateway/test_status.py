"""``GET /api/sandbox/status`` (``sandbox_gateway.http.status``) on a real gateway.

Two real Enterprise Gateways 3.3 with the sandbox's config and real local kernels: one with
Enterprise Gateway's single token, limits and a warm pool; one with tenants.  The figures are
checked against what the gateway does with them: the kernels the tests start, the pool's fill,
and the 403 a start past a cap gets.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from testkit.gateway import REPO, Gateway, gateway_venv

STATUS = "/api/sandbox/status"
TOKEN = "single-token-" + uuid.uuid4().hex
HEADERS = {"Authorization": f"token {TOKEN}"}
MAX_KERNELS, MAX_PER_USER, POOL_SIZE = 5, 2, 1
FAKE_VERSION = "9.8.7"  # of a distribution put on the single-token gateway's path (below)
TOKENS = {
    "alice": "alice-token-" + uuid.uuid4().hex,
    "bob": "bob-token-" + uuid.uuid4().hex,
    "prometheus": "prometheus-token-" + uuid.uuid4().hex,
}
ALICE_MAX, TENANTS_MAX, TENANTS_PER_USER = 2, 6, 4


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.1)


# --- a gateway with the single token, limits and a pool ----------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a mini-jupyter-sandbox distribution's metadata: on the single-token
    gateway's path it stands for an installed mini-jupyter-sandbox (the gateway runs
    sandbox_gateway from this checkout)."""
    site = tmp_path_factory.mktemp("site")
    info = site / f"mini_jupyter_sandbox-{FAKE_VERSION}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: mini-jupyter-sandbox\nVersion: {FAKE_VERSION}\n"
    )
    return site


@pytest.fixture(scope="module")
def installed_version(site: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The version the single-token gateway's Python finds on its path (the checkout, then
    ``site``): FAKE_VERSION, unless the checkout holds metadata of its own (an editable
    install's egg-info), which comes first."""
    probe = (
        "import importlib.metadata as m\n"
        "try: print(m.version('mini-jupyter-sandbox'))\n"
        "except m.PackageNotFoundError: print('unknown')\n"
    )
    python = str(gateway_venv() / "bin" / "python")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(site)])}
    # From an empty directory: "python -c" puts its working directory first on the path.
    cwd = tmp_path_factory.mktemp("empty")
    done = subprocess.run([python, "-c", probe], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def single(site: Path) -> Iterator[Gateway]:
    gw = Gateway(
        env={
            "EG_AUTH_TOKEN": TOKEN,
            "SANDBOX_MAX_KERNELS": str(MAX_KERNELS),
            "SANDBOX_MAX_KERNELS_PER_USER": str(MAX_PER_USER),
            "SANDBOX_POOL": f"python3={POOL_SIZE}",
            # Lets starts without KERNEL_USERNAME run, as the gateway's own user (root here).
            "EG_UNAUTHORIZED_USERS": "nobody-in-particular",
            "PYTHONPATH": str(site),
        }
    )
    gw.start(wait=False)
    try:
        gw.wait_ready(headers=HEADERS)
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def gw(single: Gateway) -> Iterator[Gateway]:
    """The single-token gateway with a full pool; emptied of kernels after each test."""
    wait_full(single)
    yield single
    for kernel in requests.get(f"{single.http}/api/kernels", headers=HEADERS, timeout=30).json():
        requests.delete(f"{single.http}/api/kernels/{kernel['id']}", headers=HEADERS, timeout=30)


def status(gw: Gateway, **params: str) -> dict[str, Any]:
    answer = requests.get(gw.http + STATUS, headers=HEADERS, params=params, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    body: dict[str, Any] = answer.json()
    return body


def wait_full(gw: Gateway) -> None:
    """The pool holds its target, none starting: the total is then the kernels plus the pool."""
    full = {"python3": {"ready": POOL_SIZE, "starting": 0, "target": POOL_SIZE}}
    wait_until(lambda: status(gw)["pool"] == full, "a full pool")


def start(gw: Gateway, **env: str) -> str:
    body = {"name": "python3", "env": env}
    answer = requests.post(f"{gw.http}/api/kernels", headers=HEADERS, json=body, timeout=60)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def test_the_status_answers_the_contract(gw: Gateway, installed_version: str) -> None:
    assert installed_version != "unknown"
    assert status(gw) == {
        "version": installed_version,
        "enterprise_gateway": "3.3.0",
        "tenant": None,
        "kernels": {
            "yours": 0,
            "yours_limit": MAX_PER_USER,
            "total": POOL_SIZE,  # the pooled kernel holds a slot of the total cap
            "total_limit": MAX_KERNELS,
        },
        "pool": {"python3": {"ready": POOL_SIZE, "starting": 0, "target": POOL_SIZE}},
    }


def test_the_counts_follow_the_kernels_started_and_shut_down(gw: Gateway) -> None:
    mine = start(gw)  # no KERNEL_USERNAME: the gateway's own user, as limits.py counts it
    wait_full(gw)  # the claim took the pooled kernel; a new one refilled the pool
    kernels = status(gw)["kernels"]
    assert (kernels["yours"], kernels["total"]) == (1, 1 + POOL_SIZE)

    start(gw, KERNEL_USERNAME="bob")
    wait_full(gw)
    kernels = status(gw)["kernels"]
    assert (kernels["yours"], kernels["total"]) == (1, 2 + POOL_SIZE)
    bobs = status(gw, username="bob")["kernels"]
    assert (bobs["yours"], bobs["yours_limit"], bobs["total"]) == (1, MAX_PER_USER, 2 + POOL_SIZE)

    answer = requests.delete(f"{gw.http}/api/kernels/{mine}", headers=HEADERS, timeout=30)
    assert answer.status_code == 204, answer.text
    kernels = status(gw)["kernels"]
    assert (kernels["yours"], kernels["total"]) == (0, 1 + POOL_SIZE)


def test_the_figures_are_the_ones_a_start_is_checked_against(gw: Gateway) -> None:
    for _ in range(MAX_PER_USER):
        start(gw, KERNEL_USERNAME="carol")
    wait_full(gw)
    carols = status(gw, username="carol")["kernels"]
    assert carols["yours"] == carols["yours_limit"] == MAX_PER_USER
    body = {"name": "python3", "env": {"KERNEL_USERNAME": "carol"}}
    refused = requests.post(f"{gw.http}/api/kernels", headers=HEADERS, json=body, timeout=60)
    assert refused.status_code == 403, refused.text
    assert refused.json()["kernel_limit"]["in_use"] == carols["yours"]

    start(gw, KERNEL_USERNAME="dave")
    start(gw, KERNEL_USERNAME="erin")
    # The total cap once the pool has taken its slot again: four users' kernels and the pool's.
    wait_until(lambda: status(gw)["kernels"]["total"] == MAX_KERNELS, "a full gateway")
    kernels = status(gw)["kernels"]
    assert kernels["total_limit"] == MAX_KERNELS
    body = {"name": "python3", "env": {"KERNEL_USERNAME": "frank"}}
    refused = requests.post(f"{gw.http}/api/kernels", headers=HEADERS, json=body, timeout=60)
    assert refused.status_code == 403, refused.text
    assert refused.json()["kernel_limit"] == {
        "scope": "total",
        "limit": kernels["total_limit"],
        "in_use": kernels["total"],
    }


def test_a_username_that_no_kernel_could_have_is_400(gw: Gateway) -> None:
    answer = requests.get(
        gw.http + STATUS, headers=HEADERS, params={"username": "not a name"}, timeout=30
    )
    assert answer.status_code == 400, answer.text
    assert "username" in answer.json()["message"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "token wrong-" + uuid.uuid4().hex}],
    ids=["none", "wrong"],
)
def test_the_single_token_is_required(gw: Gateway, headers: dict[str, str]) -> None:
    answer = requests.get(gw.http + STATUS, headers=headers, timeout=30)
    assert answer.status_code == 401, answer.text
    assert "version" not in answer.text
    by_argument = requests.get(gw.http + STATUS, params={"token": TOKEN}, timeout=30)
    assert by_argument.status_code == 200, by_argument.text


# --- a gateway with tenants -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    path = tmp_path_factory.mktemp("tenants") / "tenants.json"
    entries = {
        "alice": {"token": TOKENS["alice"], "max_kernels": ALICE_MAX},
        "bob": {"token": TOKENS["bob"]},
        "prometheus": {"token": TOKENS["prometheus"], "metrics": True},
    }
    path.write_text(json.dumps({"tenants": entries}))
    gw = Gateway(
        env={
            "SANDBOX_TENANTS_FILE": str(path),
            "EG_AUTH_TOKEN": "",
            "SANDBOX_MAX_KERNELS": str(TENANTS_MAX),
            "SANDBOX_MAX_KERNELS_PER_USER": str(TENANTS_PER_USER),
        }
    )
    gw.start(wait=False)
    try:
        gw.wait_ready(headers=auth("alice"))
        yield gw
    finally:
        gw.stop()


def auth(tenant: str) -> dict[str, str]:
    return {"Authorization": f"token {TOKENS[tenant]}"}


def tenant_status(gw: Gateway, tenant: str, **params: str) -> requests.Response:
    return requests.get(gw.http + STATUS, headers=auth(tenant), params=params, timeout=30)


@pytest.fixture
def kernels(tenants: Gateway) -> Iterator[dict[str, list[str]]]:
    """Two of alice's kernels and one of bob's, shut down after the test."""
    started: dict[str, list[str]] = {"alice": [], "bob": []}
    try:
        for tenant, count in (("alice", 2), ("bob", 1)):
            for _ in range(count):
                answer = requests.post(
                    f"{tenants.http}/api/kernels",
                    headers=auth(tenant),
                    json={"name": "python3"},
                    timeout=60,
                )
                assert answer.status_code == 201, answer.text
                started[tenant].append(str(answer.json()["id"]))
        yield started
    finally:
        for tenant, ids in started.items():
            for kernel_id in ids:
                requests.delete(
                    f"{tenants.http}/api/kernels/{kernel_id}", headers=auth(tenant), timeout=30
                )


def test_each_tenant_sees_its_own_count_and_cap(
    tenants: Gateway, kernels: dict[str, list[str]]
) -> None:
    alice, bob = (tenant_status(tenants, name) for name in ("alice", "bob"))
    assert alice.status_code == bob.status_code == 200, alice.text + bob.text
    assert alice.json()["tenant"] == "alice"
    assert alice.json()["kernels"] == {
        "yours": 2,
        "yours_limit": ALICE_MAX,  # the tenant's max_kernels
        "total": 3,
        "total_limit": TENANTS_MAX,
    }
    assert bob.json()["tenant"] == "bob"
    assert bob.json()["kernels"] == {
        "yours": 1,
        "yours_limit": TENANTS_PER_USER,
        "total": 3,
        "total_limit": TENANTS_MAX,
    }
    assert alice.json()["pool"] == bob.json()["pool"] == {}


def test_no_tenant_learns_an_id_or_another_tenants_count(
    tenants: Gateway, kernels: dict[str, list[str]]
) -> None:
    for tenant in ("alice", "bob", "prometheus"):
        text = tenant_status(tenants, tenant).text
        for kernel_id in kernels["alice"] + kernels["bob"]:
            assert kernel_id not in text
        assert "bob" not in text or tenant == "bob"
    # The token says who the caller is; naming another tenant changes nothing.
    named = tenant_status(tenants, "alice", username="bob").json()
    assert (named["tenant"], named["kernels"]["yours"]) == ("alice", 2)


def test_a_tenant_without_the_metrics_right_reads_the_status(tenants: Gateway) -> None:
    metrics = requests.get(f"{tenants.http}/metrics", headers=auth("bob"), timeout=30)
    assert metrics.status_code == 404
    answer = tenant_status(tenants, "bob")
    assert answer.status_code == 200, answer.text
    assert answer.json()["tenant"] == "bob"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "token wrong-token-of-nobody"}, {"Authorization": "token "}],
    ids=["none", "wrong", "empty"],
)
def test_a_request_without_a_tenants_token_is_401(
    tenants: Gateway, headers: dict[str, str]
) -> None:
    answer = requests.get(tenants.http + STATUS, headers=headers, timeout=30)
    assert answer.status_code == 401, answer.text
    assert "token" in answer.json()["message"]
    assert "kernels" not in answer.json()
