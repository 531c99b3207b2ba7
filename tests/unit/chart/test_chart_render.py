"""The chart lints clean, every ci/ scenario renders, and every object is valid Kubernetes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
from chart_testlib import (
    CHART_DIR,
    CRD_FILE,
    NAMESPACE,
    ci_scenarios,
    crd,
    find,
    kernel_pod,
    load_values,
    one,
    render_docs,
)

pytestmark = pytest.mark.unit

# The oldest Kubernetes the chart targets and the newest kubernetes-validate knows.
KUBE_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
# Kinds whose schema is not a built-in Kubernetes one: ServiceMonitor belongs to the Prometheus
# Operator, whose CRD no offline schema set ships; it is checked field by field in
# test_servicemonitor_targets_the_metrics_port instead.
NOT_BUILTIN = {"ServiceMonitor"}

SCENARIOS = ci_scenarios()


def _ids(paths: list[Path]) -> list[str]:
    return [p.name.removesuffix("-values.yaml") for p in paths]


def _errors(report: dict[str, Any]) -> list[str]:
    return [str(m) for m in report["messages"] if m["severity"] >= 2] + list(report["errors"])


def test_there_is_a_scenario_per_feature() -> None:
    names = {p.name for p in SCENARIOS}
    for feature in (
        "default",
        "ingress",
        "gvisor",
        "servicemonitor",
        "existing-secret",
        "rwx-storage",
        "networkpolicy-disabled",
        "ha",
        "dynamic-storage",
        "public-internet-egress",
        "watch-namespaces",
    ):
        assert f"{feature}-values.yaml" in names


@pytest.mark.parametrize("kube_version", ["v1.30.0", "v1.33.0"])
def test_strict_lint_is_clean(kube_version: str) -> None:
    report = helm_python.lint(
        CHART_DIR, strict=True, namespace=NAMESPACE, kube_version=kube_version
    )
    assert report["total_charts_linted"] == 1
    assert _errors(report) == []


@pytest.mark.parametrize("scenario", SCENARIOS, ids=_ids(SCENARIOS))
def test_strict_lint_is_clean_for_scenario(scenario: Path) -> None:
    report = helm_python.lint(CHART_DIR, load_values(scenario), strict=True, namespace=NAMESPACE)
    assert _errors(report) == []


def test_lint_reports_a_broken_value() -> None:
    # The lint call above would be worthless if it passed everything: a schema violation shows.
    report = helm_python.lint(
        CHART_DIR, {"gateway": {"port": "eighty"}}, strict=True, namespace=NAMESPACE
    )
    assert _errors(report)


def _validate(doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=_ids(SCENARIOS))
def test_scenario_renders_valid_kubernetes(scenario: Path, version: str) -> None:
    docs = render_docs(load_values(scenario))
    assert docs, "nothing rendered"
    validated = 0
    for doc in docs:
        if doc["kind"] in NOT_BUILTIN:
            continue
        _validate(doc, version)
        validated += 1
    # The kernel pod is created by the gateway at run time, from a template inside a
    # ConfigMap: validate the Pod it turns into too.
    _validate(kernel_pod(docs), version)
    assert validated >= 10


def test_validation_catches_an_invalid_object() -> None:
    # Proof that strict validation bites: a typo'd field in a rendered Deployment is refused.
    deployment = one(render_docs(), "Deployment", "-gateway")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(deployment, KUBE_VERSIONS[0])


def test_names_are_unique_per_kind_and_namespace() -> None:
    for scenario in SCENARIOS:
        seen: set[tuple[str, str, str]] = set()
        for doc in render_docs(load_values(scenario)):
            key = (doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"])
            assert key not in seen, f"{scenario.name}: duplicate {key}"
            seen.add(key)


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_crd_is_a_valid_customresourcedefinition(version: str) -> None:
    _validate(crd(), version)


def test_crd_ships_in_crds_dir_not_templates() -> None:
    # Helm installs crds/ before templates and never deletes it on uninstall (that would delete
    # every SandboxSession); the CRD must therefore not be a template.
    with helm_python.Chart.load(CHART_DIR) as chart:
        assert [c["filename"] for c in chart.crds] == [f"mini-jupyter-sandbox/crds/{CRD_FILE.name}"]
    assert not find(render_docs(), "CustomResourceDefinition")


def test_every_object_is_labelled_with_the_release() -> None:
    for doc in render_docs():
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/instance") == "demo", doc["metadata"]["name"]
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", doc["metadata"]["name"]


def test_image_tags_default_to_app_version_and_follow_values() -> None:
    docs = render_docs()
    images = {
        c["image"]
        for d in docs
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {
        "mini-jupyter-sandbox/gateway:0.1.0",
        "mini-jupyter-sandbox/notebook:0.1.0",
        "mini-jupyter-sandbox/fileserver:0.1.0",
        "mini-jupyter-sandbox/controller:0.1.0",
    }
    assert (
        kernel_pod(docs)["spec"]["containers"][0]["image"]
        == "mini-jupyter-sandbox/kernel-python:0.1.0"
    )
    custom = render_docs({"kernels": {"image": {"repository": "reg.example/k", "tag": "7"}}})
    assert kernel_pod(custom)["spec"]["containers"][0]["image"] == "reg.example/k:7"
