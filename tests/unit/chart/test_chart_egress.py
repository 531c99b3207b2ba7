"""Egress allow-lists in the chart (kernels.egress.allow): the egress process's objects, the
kernels' way out through it alone, and the settings the gateway and the process read from them.

The rendered environment is read by the same functions the two processes start with, so a value
the chart renders that either would refuse fails here, not in a crash-looping pod.
"""

from __future__ import annotations

import base64
import ipaddress
import json
from typing import Any

import helm_python
import pytest
from chart_testlib import (
    CHART_DIR,
    NAMESPACE,
    FakeKubeAPI,
    cluster_render,
    find,
    kernel_pod,
    load_values,
    one,
    parse,
    render,
    render_docs,
)
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from test_chart_security import ip_allowed_by_egress, kernel_policy

from sandbox_gateway.egress import __main__ as egress_process
from sandbox_gateway.egress.gateway import EgressSettings
from sandbox_gateway.launchers import rules

pytestmark = pytest.mark.unit

KERNEL_NS = f"{NAMESPACE}-kernels"
EGRESS = "demo-mini-jupyter-sandbox-egress"
CEILING = ["pypi.org", "*.pythonhosted.org", "api.example.org:8443"]
TOKEN = "control-token-as-the-secret-holds-it"


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return render_docs(load_values(CHART_DIR / "ci" / "egress-values.yaml"))


def _env(container: dict[str, Any]) -> dict[str, str]:
    """A container's environment, with the control token's secret reference filled in."""
    env = {}
    for variable in container.get("env", []):
        reference = variable.get("valueFrom", {}).get("secretKeyRef")
        if reference:
            assert reference == {"name": EGRESS, "key": "control-token"}, variable
            env[variable["name"]] = TOKEN
        else:
            env[variable["name"]] = variable["value"]
    return env


def _container(docs: list[dict[str, Any]], suffix: str) -> dict[str, Any]:
    container: dict[str, Any] = one(docs, "Deployment", suffix)["spec"]["template"]["spec"][
        "containers"
    ][0]
    return container


def _ports(rule: dict[str, Any]) -> set[tuple[Any, str]]:
    return {(p["port"], p["protocol"]) for p in rule["ports"]}


def test_without_a_ceiling_nothing_of_egress_renders() -> None:
    docs = render_docs()
    assert not [d for d in docs if d["metadata"]["name"].startswith(EGRESS)]
    assert not [k for k in _env(_container(docs, "-gateway")) if k.startswith("SANDBOX_EGRESS")]
    pod = kernel_pod(docs)
    assert "dnsPolicy" not in pod["spec"] and "dnsConfig" not in pod["spec"]
    argv = json.loads(one(docs, "ConfigMap", "-kernelspecs")["data"]["python3.kernel.json"])
    assert "--egress-service" not in argv["argv"]


def test_the_gateway_and_the_egress_process_take_the_rendered_settings(
    docs: list[dict[str, Any]],
) -> None:
    gateway = EgressSettings.from_env(_env(_container(docs, "-gateway")))
    process = egress_process.settings(_env(_container(docs, "-egress")))
    assert gateway.enabled
    assert str(gateway.ceiling) == str(process.ceiling)
    assert set(str(gateway.ceiling).split(",")) == set(CEILING)
    assert gateway.url == f"http://{EGRESS}.{NAMESPACE}.svc:{process.control_port}"
    assert gateway.answer == f"{EGRESS}.{NAMESPACE}.svc"
    # Never dialled, whatever a name resolves to: metadata, private and cluster ranges.
    for address in ("169.254.169.254", "10.96.0.1", "10.244.0.5", "192.168.1.1", "127.0.0.1"):
        assert any(ipaddress.ip_address(address) in net for net in process.denied), address


def test_the_egress_service_serves_every_port_the_process_listens_on(
    docs: list[dict[str, Any]],
) -> None:
    process = egress_process.settings(_env(_container(docs, "-egress")))
    listened = {(53, "UDP"), (53, "TCP"), (80, "TCP"), (rules.EGRESS_PROXY_PORT, "TCP")}
    listened |= {(port, "TCP") for port in process.tls_ports}
    listened.add((process.control_port, "TCP"))
    service = one(docs, "Service", "-egress")
    assert {(p["port"], p["protocol"]) for p in service["spec"]["ports"]} == listened
    container = _container(docs, "-egress")
    assert {(p["containerPort"], p["protocol"]) for p in container["ports"]} <= listened


def test_with_egress_a_kernel_reaches_the_gateway_s_response_port_and_the_egress_pod_only(
    docs: list[dict[str, Any]],
) -> None:
    egress_labels = one(docs, "Deployment", "-egress")["spec"]["selector"]["matchLabels"]
    rules_out = kernel_policy(docs)["spec"]["egress"]
    assert len(rules_out) == 2 and _ports(rules_out[0]) == {(8877, "TCP")}
    assert rules_out[1]["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}},
            "podSelector": {"matchLabels": egress_labels},
        }
    ]
    assert _ports(rules_out[1]) == {
        (53, "UDP"),
        (53, "TCP"),
        (3128, "TCP"),
        (80, "TCP"),
        (443, "TCP"),
        (8443, "TCP"),
    }
    # Cluster DNS is no longer a way out: a query could carry data to any resolver upstream.
    assert "kube-dns" not in json.dumps(rules_out)
    for address in ("151.101.0.223", "169.254.169.254", "10.96.0.10"):
        assert not ip_allowed_by_egress(kernel_policy(docs), ipaddress.ip_address(address))


def test_the_egress_pod_admits_kernels_on_its_service_ports_and_the_gateway_on_control(
    docs: list[dict[str, Any]],
) -> None:
    policy = one(docs, "NetworkPolicy", "-egress")
    kernels, gateway = policy["spec"]["ingress"]
    kernel_peer = kernels["from"][0]
    assert kernel_peer["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": KERNEL_NS}
    }
    assert kernel_peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "kernel"
    assert (8900, "TCP") not in _ports(kernels)
    assert gateway["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == (
        "gateway"
    )
    assert _ports(gateway) == {(8900, "TCP")}


def test_the_egress_pod_reaches_public_addresses_on_the_ceiling_s_ports_and_nothing_private(
    docs: list[dict[str, Any]],
) -> None:
    policy = one(docs, "NetworkPolicy", "-egress")
    assert ip_allowed_by_egress(policy, ipaddress.ip_address("151.101.0.223"))
    for address in ("169.254.169.254", "10.1.2.3", "172.20.0.1", "192.168.1.1", "100.100.100.1"):
        assert not ip_allowed_by_egress(policy, ipaddress.ip_address(address)), address
    public = [r for r in policy["spec"]["egress"] if any("ipBlock" in p for p in r["to"])]
    assert len(public) == 1 and _ports(public[0]) == {(80, "TCP"), (443, "TCP"), (8443, "TCP")}


def test_a_kernel_s_dns_is_the_egress_service_and_it_trusts_the_egress_ca(
    docs: list[dict[str, Any]],
) -> None:
    pod = kernel_pod(docs, egress_address="10.96.0.77")
    assert pod["spec"]["dnsPolicy"] == "None"
    assert pod["spec"]["dnsConfig"]["nameservers"] == ["10.96.0.77"]
    (mount,) = [m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == "egress-ca"]
    assert mount == {"name": "egress-ca", "mountPath": rules.EGRESS_CA_DIR, "readOnly": True}
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "egress-ca"]
    configmap = one(docs, "ConfigMap", "-egress-ca")
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert configmap["metadata"]["namespace"] == pod["metadata"]["namespace"] == KERNEL_NS
    assert rules.EGRESS_CA_FILE.removeprefix(f"{rules.EGRESS_CA_DIR}/") in configmap["data"]
    # The launcher is told the Service the gateway answers allowed names with.
    kernelspec = json.loads(one(docs, "ConfigMap", "-kernelspecs")["data"]["python3.kernel.json"])
    argv = kernelspec["argv"]
    service = argv[argv.index("--egress-service") + 1]
    assert service == _env(_container(docs, "-gateway"))["SANDBOX_EGRESS_ANSWER"]


def _ca(docs: list[dict[str, Any]]) -> tuple[x509.Certificate, Any, str]:
    """The egress CA: its certificate and key from the Secret, and the kernels' copy."""
    data = one(docs, "Secret", "-egress")["data"]
    cert = x509.load_pem_x509_certificate(base64.b64decode(data["ca.pem"]))
    key = serialization.load_pem_private_key(base64.b64decode(data["ca.key"]), password=None)
    return cert, key, one(docs, "ConfigMap", "-egress-ca")["data"]["ca.pem"]


def test_the_kernels_get_the_ca_s_certificate_and_never_its_key(
    docs: list[dict[str, Any]],
) -> None:
    cert, key, published = _ca(docs)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert published.encode() == cert.public_bytes(serialization.Encoding.PEM)
    text = json.dumps([d for d in docs if d["metadata"].get("namespace") == KERNEL_NS])
    assert (
        "PRIVATE KEY" not in text
        and base64.b64decode(one(docs, "Secret", "-egress")["data"]["ca.key"]).decode() not in text
    )


def test_the_ca_and_the_control_token_survive_an_upgrade() -> None:
    values = load_values(CHART_DIR / "ci" / "egress-values.yaml")
    installed = render_docs(values)
    secret = one(installed, "Secret", "-egress")["data"]
    kept = {key: base64.b64decode(value).decode() for key, value in secret.items()}
    with FakeKubeAPI() as api, cluster_render(api) as render_live:
        api.store_secret(NAMESPACE, EGRESS, kept)
        upgraded = render_live(values)
    assert one(upgraded, "Secret", "-egress")["data"] == secret
    assert (
        one(upgraded, "ConfigMap", "-egress-ca")["data"]
        == one(installed, "ConfigMap", "-egress-ca")["data"]
    )
    # A fresh install mints another CA: kernels of one release never trust another's.
    assert _ca(render_docs(values))[2] != _ca(installed)[2]


@pytest.mark.parametrize(
    "allow",
    [["https://pypi.org"], ["pypi.org/simple"], ["pypi.org:http"], ["*"], [""], ["a.org", "a.org"]],
)
def test_a_ceiling_entry_that_is_no_domain_pattern_is_refused(allow: list[str]) -> None:
    with pytest.raises(helm_python.HelmValuesError, match="/kernels/egress/allow"):
        render({"kernels": {"egress": {"allow": allow}}})


def test_only_the_gateway_s_namespace_holds_the_ca_key() -> None:
    docs = parse(render(load_values(CHART_DIR / "ci" / "egress-values.yaml")))
    holders = [d for d in find(docs, "Secret") if "ca.key" in d.get("data", {})]
    assert [(d["metadata"]["namespace"], d["metadata"]["name"]) for d in holders] == [
        (NAMESPACE, EGRESS)
    ]
