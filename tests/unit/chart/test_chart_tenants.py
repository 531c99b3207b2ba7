"""The gateway's tenants in the chart: the tenants file in the gateway's Secret, one token per
tenant beside it, the release's own tenants and their rights, and the controller's map of
namespaces to tenants.  (A real gateway reading the chart's file: tests/integration/gateway.)"""

from __future__ import annotations

import base64
import json
from typing import Any

import helm_python
import pytest
from chart_testlib import one, render_docs

pytestmark = pytest.mark.unit


def docs_container(docs: list[dict[str, Any]], suffix: str) -> dict[str, Any]:
    pod = one(docs, "Deployment", suffix)["spec"]["template"]["spec"]
    container: dict[str, Any] = pod["containers"][0]
    return container


def secret_data(docs: list[dict[str, Any]]) -> dict[str, str]:
    secret = one(docs, "Secret", "-gateway-token")
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def tenants_file(docs: list[dict[str, Any]]) -> dict[str, Any]:
    tenants: dict[str, Any] = json.loads(secret_data(docs)["tenants.json"])["tenants"]
    return tenants


def test_operator_tenants_get_caps_and_tokens_of_their_own() -> None:
    given = "alice-0123456789abcdef0123"
    tenants = {"alice": {"maxKernels": 3, "token": given}, "agents": {}}
    docs = render_docs({"gateway": {"auth": {"tenants": tenants}}})
    data, file = secret_data(docs), tenants_file(docs)
    assert sorted(file) == ["agents", "alice", "controller", "notebook"]
    assert file["alice"] == {"token": given, "max_kernels": 3}
    assert file["agents"] == {"token": data["agents"]}
    assert len(data["agents"]) == 48
    # Rights are the release's to give: no operator tenant delegates or reads metrics.
    assert [n for n, t in file.items() if t.get("delegate") or t.get("metrics")] == ["controller"]
    assert len({t["token"] for t in file.values()}) == 4


def test_a_release_tenant_may_be_capped_but_keeps_its_rights() -> None:
    docs = render_docs({"gateway": {"auth": {"tenants": {"controller": {"maxKernels": 50}}}}})
    assert tenants_file(docs)["controller"]["delegate"] is True
    assert tenants_file(docs)["controller"]["max_kernels"] == 50


def test_the_release_tenants_follow_the_components_deployed() -> None:
    values = {"notebook": {"enabled": False}, "gateway": {"serviceMonitor": {"enabled": True}}}
    file = tenants_file(render_docs(values))
    assert sorted(file) == ["controller", "prometheus"]
    assert file["prometheus"]["metrics"] is True


def test_no_tenant_at_all_is_refused_with_the_reason() -> None:
    values = {"notebook": {"enabled": False}, "controller": {"enabled": False}}
    with pytest.raises(helm_python.HelmRenderError, match="needs at least one tenant"):
        render_docs(values)


def test_no_tenants_without_auth() -> None:
    docs = render_docs({"gateway": {"auth": {"enabled": False}}})
    names = [e["name"] for e in docs_container(docs, "-gateway")["env"]]
    assert "SANDBOX_TENANTS_FILE" not in names
    assert not [d for d in docs if d["kind"] == "Secret" and "gateway" in d["metadata"]["name"]]


def test_the_controller_gets_the_namespace_map() -> None:
    docs = render_docs({"controller": {"namespaceTenants": {"team-a": "alice", "lab": "agents"}}})
    env = {e["name"]: e.get("value") for e in docs_container(docs, "-controller")["env"]}
    assert json.loads(env["SANDBOX_NAMESPACE_TENANTS"]) == {"team-a": "alice", "lab": "agents"}


@pytest.mark.parametrize(
    "values",
    [
        {"gateway": {"auth": {"tenants": {"tenants.json": {}}}}},
        {"gateway": {"auth": {"tenants": {"bad name": {}}}}},
        {"gateway": {"auth": {"tenants": {"a": {"token": "short"}}}}},
        {"gateway": {"auth": {"tenants": {"a": {"maxKernels": 0}}}}},
        {"gateway": {"auth": {"tenants": {"a": {"delegate": True}}}}},
        {"controller": {"namespaceTenants": {"Team_A": "alice"}}},
        {"controller": {"namespaceTenants": {"team-a": "two words"}}},
    ],
    ids=["file-name", "space", "short-token", "zero-cap", "no-delegation", "namespace", "tenant"],
)
def test_bad_tenant_values_are_refused_by_the_schema(values: dict[str, Any]) -> None:
    with pytest.raises(helm_python.HelmValuesError):
        render_docs(values)
