"""The chart's notebook: its home on a kept claim, egress to the gateway only, its own names."""

from __future__ import annotations

from typing import Any

import helm_python
import kubernetes_validate
import pytest
from chart_testlib import (
    CHART_DIR,
    NAMESPACE,
    find,
    kernel_pod,
    load_values,
    one,
    render,
    render_docs,
)

pytestmark = pytest.mark.unit

NOTEBOOK = "demo-mini-jupyter-sandbox-notebook"
HOME_CLAIM = f"{NOTEBOOK}-home"


def _pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(docs, "Deployment", "-notebook")["spec"]["template"]["spec"]
    return spec


def _mounts(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mount path -> the pod volume mounted there."""
    pod = _pod(docs)
    volumes = {v["name"]: v for v in pod["volumes"]}
    (container,) = pod["containers"]
    return {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}


def _env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = _pod(docs)["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def _policy(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(find(docs, "NetworkPolicy"), "NetworkPolicy", "-notebook")


def _labels(docs: list[dict[str, Any]], suffix: str) -> dict[str, str]:
    labels: dict[str, str] = one(docs, "Deployment", suffix)["spec"]["template"]["metadata"][
        "labels"
    ]
    return labels


def _selects(peer: dict[str, Any], namespace: str, labels: dict[str, str]) -> bool:
    """Whether a NetworkPolicy peer (no ipBlock) matches a pod in ``namespace``."""
    assert "ipBlock" not in peer, "an ipBlock peer would reach addresses outside the cluster"
    if "namespaceSelector" in peer:
        wanted = peer["namespaceSelector"].get("matchLabels", {})
        if not wanted.items() <= {"kubernetes.io/metadata.name": namespace}.items():
            return False
    elif namespace != NAMESPACE:
        return False
    return bool(peer.get("podSelector", {}).get("matchLabels", {}).items() <= labels.items())


# --- the home: where users save notebooks ----------------------------------------------------


def test_the_notebook_root_is_on_a_kept_claim_and_shared_data_stays() -> None:
    docs = render_docs()
    mounts = _mounts(docs)
    assert _env(docs)["NOTEBOOK_ROOT_DIR"] == "/home/jovyan"
    assert mounts["/home/jovyan"]["persistentVolumeClaim"]["claimName"] == HOME_CLAIM
    shared = mounts["/home/jovyan/shared-data"]["persistentVolumeClaim"]["claimName"]
    assert shared != HOME_CLAIM and "-shared" in shared
    # Nothing under the root is an emptyDir any more: a notebook saved anywhere there persists.
    assert [p for p, v in mounts.items() if p.startswith("/home/") and "emptyDir" in v] == []

    claim = one(docs, "PersistentVolumeClaim", "-notebook-home")
    assert claim["metadata"]["name"] == HOME_CLAIM
    # `helm uninstall` leaves the notebooks where they are.
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert "storageClassName" not in claim["spec"]
    # One pod at a time on a ReadWriteOnce claim.
    assert one(docs, "Deployment", "-notebook")["spec"]["strategy"]["type"] == "Recreate"


def test_the_home_claim_follows_values() -> None:
    docs = render_docs(
        {
            "notebook": {
                "persistence": {
                    "size": "50Gi",
                    "storageClassName": "fast-ssd",
                    "accessMode": "ReadWriteOncePod",
                }
            }
        }
    )
    claim = one(docs, "PersistentVolumeClaim", "-notebook-home")
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert claim["spec"]["accessModes"] == ["ReadWriteOncePod"]


def test_an_existing_claim_is_used_as_is() -> None:
    docs = render_docs({"notebook": {"persistence": {"existingClaim": "alice-notebooks"}}})
    assert _mounts(docs)["/home/jovyan"]["persistentVolumeClaim"]["claimName"] == (
        "alice-notebooks"
    )
    assert find(docs, "PersistentVolumeClaim", "-notebook-home") == []


def test_persistence_can_be_turned_off_explicitly() -> None:
    docs = render_docs({"notebook": {"persistence": {"enabled": False}}})
    assert _mounts(docs)["/home/jovyan"]["emptyDir"] == {"sizeLimit": "10Gi"}
    assert find(docs, "PersistentVolumeClaim", "-notebook-home") == []


def test_no_claim_without_the_notebook() -> None:
    docs = render_docs({"notebook": {"enabled": False}})
    assert find(docs, "PersistentVolumeClaim", "-notebook-home") == []


@pytest.mark.parametrize(
    "persistence",
    [
        {"enabled": "yes"},
        {"size": "0Gi"},
        {"size": "lots"},
        {"accessMode": "ReadWriteSometimes"},
        {"existingClaim": "Not A Name"},
        {"storageClassName": "fast ssd"},
        {"sizeLimit": "1Gi"},
    ],
    ids=str,
)
def test_the_schema_refuses_bad_persistence_values(persistence: dict[str, Any]) -> None:
    with pytest.raises(helm_python.HelmValuesError):
        render({"notebook": {"persistence": persistence}})


@pytest.mark.parametrize("values", [{}, {"notebook": {"persistence": {"enabled": False}}}])
def test_notebook_objects_are_valid_kubernetes(values: dict[str, Any]) -> None:
    docs = render_docs(values)
    objects = [
        one(docs, "Deployment", "-notebook"),
        _policy(docs),
        *find(docs, "PersistentVolumeClaim", "-notebook-home"),
    ]
    for doc in objects:
        doc = dict(doc, metadata={k: v for k, v in doc["metadata"].items() if v != {}})
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


# --- egress: the gateway and DNS, nothing else -----------------------------------------------


def test_the_notebook_reaches_only_the_gateway_and_dns() -> None:
    docs = render_docs()
    policy = _policy(docs)
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    gateway, notebook = _labels(docs, "-gateway"), _labels(docs, "-notebook")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= notebook.items()
    fileserver, controller = _labels(docs, "-fileserver"), _labels(docs, "-controller")
    kernel = kernel_pod(docs)["metadata"]
    dns_labels = {"k8s-app": "kube-dns"}
    gateway_rules, dns_rules = [], []
    for rule in policy["spec"]["egress"]:
        peers = rule["to"]
        assert peers, "a rule without peers would allow every destination"
        for peer in peers:
            if _selects(peer, NAMESPACE, gateway):
                gateway_rules.append(rule)
            elif _selects(peer, "kube-system", dns_labels):
                dns_rules.append(rule)
            else:
                raise AssertionError(f"unexpected egress peer {peer}")
            for other in (notebook, fileserver, controller):
                assert not _selects(peer, NAMESPACE, other), (peer, other)
            assert not _selects(peer, kernel["namespace"], kernel["labels"]), peer
    (gateway_rule,) = gateway_rules
    assert gateway_rule["ports"] == [{"port": 8889, "protocol": "TCP"}]
    (dns_rule,) = dns_rules
    assert {(p["port"], p["protocol"]) for p in dns_rule["ports"]} == {(53, "UDP"), (53, "TCP")}


def test_the_egress_policy_follows_the_gateway_port() -> None:
    docs = render_docs({"gateway": {"port": 9999}})
    ports = [p["port"] for r in _policy(docs)["spec"]["egress"] for p in r["ports"]]
    assert 9999 in ports and 8889 not in ports


def test_no_address_outside_the_cluster_is_reachable() -> None:
    # Pod and namespace selectors only ever match pod addresses: with no ipBlock peer, the
    # metadata endpoint, private ranges and the internet stay closed.
    egress = _policy(render_docs())["spec"]["egress"]
    assert all(rule["to"] for rule in egress)
    assert all("ipBlock" not in peer for rule in egress for peer in rule["to"])


def test_the_gateway_still_admits_the_notebook() -> None:
    docs = render_docs()
    notebook = _labels(docs, "-notebook")
    gateway_policy = one(find(docs, "NetworkPolicy"), "NetworkPolicy", "-gateway")
    assert any(
        _selects(peer, NAMESPACE, notebook)
        for rule in gateway_policy["spec"]["ingress"]
        for peer in rule["from"]
    )


# --- Host allow-list (DNS rebinding) ---------------------------------------------------------


def test_the_notebook_answers_to_its_service_names() -> None:
    hosts = _env(render_docs())["SANDBOX_ALLOWED_HOSTS"].split(",")
    assert NOTEBOOK in hosts
    assert f"{NOTEBOOK}.{NAMESPACE}.svc.cluster.local" in hosts
    assert not any("ingress" in h or "example" in h for h in hosts)


def test_the_notebook_answers_to_its_ingress_host_and_extra_names() -> None:
    values = load_values(CHART_DIR / "ci" / "ingress-values.yaml")
    values["allowedHosts"] = ["lab.example.org"]
    hosts = _env(render_docs(values))["SANDBOX_ALLOWED_HOSTS"].split(",")
    assert "notebook.sandbox.example.com" in hosts
    assert "lab.example.org" in hosts
    # Another component's ingress name is not the notebook's.
    assert "files.sandbox.example.com" not in hosts
