"""DNS rebinding in the chart: each service's Host allow-list is derived from the values."""

from __future__ import annotations

import json

import jsonschema
import pytest
from chart_testlib import CHART_DIR, NAMESPACE, load_values, one, render_docs

ALLOWED_HOST_SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())["properties"][
    "allowedHosts"
]["items"]


def allowed_hosts(docs: list[dict], suffix: str) -> list[str]:
    container = one(docs, "Deployment", suffix)["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    return str(env["SANDBOX_ALLOWED_HOSTS"]).split(",")


@pytest.mark.parametrize("component", ["gateway", "fileserver"])
def test_service_names_are_allowed(component: str) -> None:
    docs = render_docs()
    service = one(docs, "Service", f"-{component}")["metadata"]["name"]
    hosts = allowed_hosts(docs, f"-{component}")
    assert hosts == [
        service,
        f"{service}.{NAMESPACE}",
        f"{service}.{NAMESPACE}.svc",
        f"{service}.{NAMESPACE}.svc.cluster.local",
    ]


@pytest.mark.parametrize(
    ("component", "host"),
    [("gateway", "gateway.sandbox.example.com"), ("fileserver", "files.sandbox.example.com")],
)
def test_ingress_host_and_extra_names_are_allowed(component: str, host: str) -> None:
    values = load_values(CHART_DIR / "ci" / "ingress-values.yaml")
    values["allowedHosts"] = ["sandbox.internal", ".corp.example"]
    hosts = allowed_hosts(render_docs(values), f"-{component}")
    assert host in hosts
    assert hosts[-2:] == ["sandbox.internal", ".corp.example"]
    # Another component's ingress host is not this one's name.
    assert not any(h.startswith("notebook.") for h in hosts)


def test_no_ingress_host_is_added_when_the_ingress_is_off() -> None:
    values = load_values(CHART_DIR / "ci" / "ingress-values.yaml")
    values["ingress"]["enabled"] = False
    assert "gateway.sandbox.example.com" not in allowed_hosts(render_docs(values), "-gateway")


def test_kernel_limits_are_set_explicitly() -> None:
    # In a cluster the gateway cannot size the limit from its own node's memory.
    container = one(render_docs(), "Deployment", "-gateway")["spec"]["template"]["spec"][
        "containers"
    ][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SANDBOX_MAX_KERNELS"] == "50"
    assert env["SANDBOX_MAX_KERNELS_PER_USER"] == "10"


@pytest.mark.parametrize("entry", ["a..b", ".0.5", ".", "-a", "files.example.org:443", "*.x"])
def test_the_schema_refuses_entries_the_host_rule_would_refuse(entry: str) -> None:
    # The gateway, notebook and file server exit on such an entry: refused at install instead.
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(entry, ALLOWED_HOST_SCHEMA)


@pytest.mark.parametrize("entry", ["sandbox.internal", ".corp.example", "10.0.0.5", "localhost"])
def test_the_schema_takes_names_addresses_and_domains(entry: str) -> None:
    jsonschema.validate(entry, ALLOWED_HOST_SCHEMA)
