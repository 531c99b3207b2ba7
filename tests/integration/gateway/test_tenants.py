"""Tenants on a real gateway (``sandbox_gateway.admission.tenants``): tokens are identities, and
a kernel answers only to the tenant that owns it.

A real Enterprise Gateway 3.3 with the sandbox's config, a tenants file and real local kernels.
The probes are what another tenant would try with a victim's kernel id: list, read, connect,
interrupt, restart, delete; each must look exactly like an id the gateway never had.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import pytest
import requests
import websocket
import yaml

from jupyter_kernel_client import AuthenticationError, GatewayKernelSession, KernelClientError
from testkit.concurrent import at_once
from testkit.gateway import REPO, Gateway, free_port

TOKENS = {
    "alice": "alice-token-" + uuid.uuid4().hex,
    "bob": "bob-token-" + uuid.uuid4().hex,
    "controller": "controller-token-" + uuid.uuid4().hex,
    "prometheus": "prometheus-token-" + uuid.uuid4().hex,
}
ALICE_MAX = 2


def tenants_file(path: Path, tenants: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"tenants": tenants}))
    return path


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    path = tenants_file(
        tmp_path_factory.mktemp("tenants") / "tenants.json",
        {
            "alice": {"token": TOKENS["alice"], "max_kernels": ALICE_MAX},
            "bob": {"token": TOKENS["bob"]},
            "controller": {"token": TOKENS["controller"], "delegate": True},
            "prometheus": {"token": TOKENS["prometheus"], "metrics": True},
        },
    )
    gateway = Gateway(env={"SANDBOX_TENANTS_FILE": str(path), "EG_AUTH_TOKEN": ""})
    gateway.start(wait=False)
    gateway.wait_ready(headers=auth("alice"))
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(autouse=True)
def no_kernels_left(gw: Gateway) -> Iterator[None]:
    yield
    for kernel in api(gw, "controller", "GET", "/api/kernels").json():
        api(gw, "controller", "DELETE", f"/api/kernels/{kernel['id']}")


def auth(tenant: str) -> dict[str, str]:
    return {"Authorization": f"token {TOKENS[tenant]}"}


def api(gw: Gateway, tenant: str | None, method: str, path: str, **kwargs: Any) -> Any:
    headers = auth(tenant) if tenant else {}
    return requests.request(method, gw.http + path, headers=headers, timeout=60, **kwargs)


def start(gw: Gateway, tenant: str, **env: str) -> str:
    answer = api(gw, tenant, "POST", "/api/kernels", json={"name": "python3", "env": env})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def session(gw: Gateway, tenant: str, **kwargs: Any) -> GatewayKernelSession:
    return GatewayKernelSession(gw.http, gw.ws, "python3", gateway_token=TOKENS[tenant], **kwargs)


def ws_status(gw: Gateway, tenant: str | None, kernel_id: str) -> int:
    """The status a websocket upgrade to ``kernel_id``'s channels gets (101: connected)."""
    headers = [f"Authorization: token {TOKENS[tenant]}"] if tenant else []
    try:
        conn = websocket.create_connection(
            f"{gw.ws}/api/kernels/{kernel_id}/channels", header=headers, timeout=30
        )
    except websocket.WebSocketBadStatusException as exc:
        return int(exc.status_code)
    conn.close()
    return 101


# --- identity ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "token wrong-token-of-nobody"}, {"Authorization": "token "}],
    ids=["none", "wrong", "empty"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/kernels"), ("POST", "/api/kernels"), ("GET", "/api/kernelspecs")],
)
def test_a_request_without_a_tenants_token_is_401(
    gw: Gateway, headers: dict[str, str], method: str, path: str
) -> None:
    body = {"name": "python3"} if method == "POST" else None
    answer = requests.request(method, gw.http + path, headers=headers, json=body, timeout=30)
    assert answer.status_code == 401, answer.text
    assert "token" in answer.json()["message"]
    assert api(gw, "controller", "GET", "/api/kernels").json() == []


def test_a_websocket_without_a_tenants_token_is_401(gw: Gateway) -> None:
    kernel_id = start(gw, "alice")
    assert ws_status(gw, None, kernel_id) == 401
    assert ws_status(gw, "alice", kernel_id) == 101


def test_the_client_reports_a_wrong_token_as_an_authentication_error(gw: Gateway) -> None:
    s = GatewayKernelSession(gw.http, gw.ws, "python3", gateway_token="not-a-tenants-token")
    with pytest.raises(AuthenticationError) as caught:
        s.start()
    assert caught.value.status_code == 401


# --- ownership ----------------------------------------------------------------------------------


def test_a_kernel_is_its_starters_whatever_username_the_client_sends(gw: Gateway) -> None:
    with session(gw, "alice", launch_env={"KERNEL_USERNAME": "bob"}) as s:
        assert str(s.execute("import os; os.environ['KERNEL_USERNAME']")) == "'alice'"
        ids = [k["id"] for k in api(gw, "alice", "GET", "/api/kernels").json()]
        assert ids == [s.kernel_id]
        assert api(gw, "bob", "GET", "/api/kernels").json() == []


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("DELETE", ""), ("POST", "/interrupt"), ("POST", "/restart")],
)
def test_another_tenants_kernel_answers_as_an_unknown_id(
    gw: Gateway, method: str, suffix: str
) -> None:
    victim = start(gw, "alice")
    unknown = str(uuid.uuid4())
    probe = api(gw, "bob", method, f"/api/kernels/{victim}{suffix}")
    control = api(gw, "bob", method, f"/api/kernels/{unknown}{suffix}")
    assert probe.status_code == control.status_code == 404
    assert probe.json() == {
        **control.json(),
        "message": control.json()["message"].replace(unknown, victim),
    }
    assert probe.headers.get("Content-Type") == control.headers.get("Content-Type")
    # The victim's kernel is untouched and still hers.
    with session(gw, "alice", kernel_id=victim) as s:
        assert str(s.execute("1 + 1")) == "2"


def test_another_tenants_kernel_refuses_its_websocket(gw: Gateway) -> None:
    victim = start(gw, "alice")
    assert ws_status(gw, "bob", victim) == ws_status(gw, "bob", str(uuid.uuid4())) == 404
    # The client, attaching, meets the victim's kernel as it meets an id that never existed.
    failures = []
    for kernel_id in (victim, str(uuid.uuid4())):
        with pytest.raises(KernelClientError) as caught:
            session(gw, "bob", kernel_id=kernel_id).start()
        failures.append((type(caught.value), str(caught.value).replace(kernel_id, "<id>")))
    assert failures[0] == failures[1]


def test_a_restart_keeps_the_owner(gw: Gateway) -> None:
    victim = start(gw, "alice")
    assert api(gw, "alice", "POST", f"/api/kernels/{victim}/restart").status_code == 200
    assert api(gw, "bob", "GET", f"/api/kernels/{victim}").status_code == 404
    assert api(gw, "alice", "GET", f"/api/kernels/{victim}").status_code == 200


def test_the_sessions_api_is_not_served(gw: Gateway) -> None:
    """Its handlers would start kernels with the gateway's own environment, unchecked."""
    start(gw, "alice")
    assert api(gw, "bob", "GET", "/api/sessions").status_code == 404
    body = {"path": "x", "type": "notebook", "kernel": {"name": "python3"}}
    assert api(gw, "bob", "POST", "/api/sessions", json=body).status_code == 404
    assert api(gw, "controller", "GET", "/api/kernels").json()[0]["id"]  # only alice's kernel


# --- caps and delegation --------------------------------------------------------------------------


def test_a_tenants_cap_holds_under_concurrent_starts(gw: Gateway) -> None:
    attempts = 5

    def race(n: int) -> requests.Response:
        # Each racer claims to be someone else: the cap is the tenant's all the same.
        body = {"name": "python3", "env": {"KERNEL_USERNAME": f"racer{n}"}}
        return api(gw, "alice", "POST", "/api/kernels", json=body)

    answers = at_once(attempts, race)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] * ALICE_MAX + [403] * (attempts - ALICE_MAX), statuses
    refused = next(a for a in answers if a.status_code == 403).json()["kernel_limit"]
    assert (refused["scope"], refused["user"], refused["limit"]) == ("user", "alice", ALICE_MAX)
    assert len(api(gw, "alice", "GET", "/api/kernels").json()) == ALICE_MAX
    assert start(gw, "bob")  # another tenant's slots are its own


def test_the_controller_starts_for_a_tenant_who_then_owns_the_kernel(gw: Gateway) -> None:
    kernel_id = start(gw, "controller", KERNEL_USERNAME="alice")
    assert [k["id"] for k in api(gw, "alice", "GET", "/api/kernels").json()] == [kernel_id]
    assert api(gw, "bob", "GET", f"/api/kernels/{kernel_id}").status_code == 404
    with session(gw, "alice", kernel_id=kernel_id) as s:
        assert str(s.execute("import os; os.environ['KERNEL_USERNAME']")) == "'alice'"
    assert api(gw, "controller", "DELETE", f"/api/kernels/{kernel_id}").status_code == 204


def test_only_the_controller_may_name_another_owner(gw: Gateway) -> None:
    answer = api(
        gw,
        "controller",
        "POST",
        "/api/kernels",
        json={"name": "python3", "env": {"KERNEL_USERNAME": "mallory"}},
    )
    assert answer.status_code == 400
    assert "no tenant named 'mallory'" in answer.json()["message"]
    bobs = start(gw, "bob", KERNEL_USERNAME="alice")
    assert api(gw, "alice", "GET", f"/api/kernels/{bobs}").status_code == 404


def test_metrics_answer_only_a_metrics_tenant(gw: Gateway) -> None:
    assert api(gw, "alice", "GET", "/metrics").status_code == 404
    assert api(gw, None, "GET", "/metrics").status_code == 401
    answer = api(gw, "prometheus", "GET", "/metrics")
    assert answer.status_code == 200
    assert "sandbox_kernel_starts_total" in answer.text


def test_metrics_on_a_port_of_their_own(tmp_path: Path) -> None:
    """SANDBOX_METRICS_PORT: a network policy can open the metrics without the kernel API."""
    path = tenants_file(
        tmp_path / "tenants.json",
        {
            "alice": {"token": TOKENS["alice"]},
            "prometheus": {"token": TOKENS["prometheus"], "metrics": True},
        },
    )
    port = free_port()
    gateway = Gateway(env={"SANDBOX_TENANTS_FILE": str(path), "SANDBOX_METRICS_PORT": str(port)})
    gateway.start(wait=False)
    try:
        gateway.wait_ready(headers=auth("alice"))
        metrics = f"http://127.0.0.1:{port}/metrics"
        assert api(gateway, "prometheus", "GET", "/metrics").status_code == 404  # API port
        answer = requests.get(metrics, headers=auth("prometheus"), timeout=10)
        assert answer.status_code == 200
        assert "sandbox_kernel_starts_total" in answer.text
        assert requests.get(metrics, timeout=10).status_code == 401
        assert requests.get(metrics, headers=auth("alice"), timeout=10).status_code == 404
        # Nothing but /metrics there.
        kernels = f"http://127.0.0.1:{port}/api/kernels"
        assert requests.get(kernels, headers=auth("alice"), timeout=10).status_code == 404
    finally:
        gateway.stop()


def test_the_charts_tenants_file_is_one_the_gateway_runs_with(tmp_path: Path) -> None:
    """What the chart writes into the gateway's Secret, read by a real gateway: each token is
    its tenant, with the cap and rights the chart gave it."""
    values = {"gateway": {"auth": {"tenants": {"alice": {"maxKernels": 1}}}}}
    with helm_python.Chart.load(REPO / "charts" / "mini-jupyter-sandbox") as chart:
        rendered = chart.render(values, name="demo", namespace="sandbox")
    secret = next(
        doc
        for path, text in rendered.items()
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc and doc["kind"] == "Secret" and doc["metadata"]["name"].endswith("-gateway-token")
    )
    data = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    (tmp_path / "tenants.json").write_text(data["tenants.json"])
    gateway = Gateway(env={"SANDBOX_TENANTS_FILE": str(tmp_path / "tenants.json")})
    gateway.start(wait=False)

    def call(tenant: str, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"token {data[tenant]}"}
        return requests.request(method, gateway.http + path, headers=headers, timeout=60, **kwargs)

    try:
        gateway.wait_ready(headers={"Authorization": f"token {data['alice']}"})
        body = {"name": "python3"}
        kernel_id = call("alice", "POST", "/api/kernels", json=body).json()["id"]
        assert call("alice", "POST", "/api/kernels", json=body).status_code == 403  # maxKernels
        assert call("notebook", "GET", f"/api/kernels/{kernel_id}").status_code == 404
        assert call("controller", "GET", f"/api/kernels/{kernel_id}").status_code == 200
    finally:
        gateway.stop()


# --- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "env", "message"),
    [
        ("not json", {}, "is not JSON"),
        (json.dumps({"tenants": {}}), {}, '{"tenants"'),
        (json.dumps({"tenants": {"a": {"token": "short"}}}), {}, "at least 16"),
        (json.dumps({"tenants": {"bad name": {"token": "x" * 20}}}), {}, "tenant name"),
        (json.dumps({"tenants": {"a": {"token": "x" * 20, "admin": True}}}), {}, "unknown keys"),
        (
            json.dumps({"tenants": {"a": {"token": "x" * 20}, "b": {"token": "x" * 20}}}),
            {},
            "share a token",
        ),
        (json.dumps({"tenants": {"a": {"token": "x" * 20, "max_kernels": 0}}}), {}, "max_kernels"),
        (json.dumps({"tenants": {"a": {"token": "x" * 20}}}), {"EG_AUTH_TOKEN": "t"}, "both"),
        (
            json.dumps({"tenants": {"a": {"token": "x" * 20}}}),
            {"SANDBOX_METRICS_PORT": "http"},
            "SANDBOX_METRICS_PORT must be a port number",
        ),
    ],
)
def test_a_bad_tenants_file_stops_the_gateway_with_a_message(
    tmp_path: Path, content: str, env: dict[str, str], message: str
) -> None:
    path = tmp_path / "tenants.json"
    path.write_text(content)
    gateway = Gateway(env={"SANDBOX_TENANTS_FILE": str(path), **env})
    gateway.start(wait=False)
    try:
        with pytest.raises(RuntimeError, match="exited early") as caught:
            gateway.wait_ready(timeout=60)
        assert message in str(caught.value)
    finally:
        gateway.stop()


def test_a_missing_tenants_file_stops_the_gateway(tmp_path: Path) -> None:
    gateway = Gateway(env={"SANDBOX_TENANTS_FILE": str(tmp_path / "absent.json")})
    gateway.start(wait=False)
    try:
        with pytest.raises(RuntimeError, match="cannot read SANDBOX_TENANTS_FILE"):
            gateway.wait_ready(timeout=60)
    finally:
        gateway.stop()
