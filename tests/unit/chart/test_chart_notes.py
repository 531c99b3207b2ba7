"""NOTES.txt, what ``helm install`` prints last: how to reach each service, and a warning when
the images are the local ones that no registry serves.

Rendered by Helm itself (the SDK's render returns NOTES.txt beside the manifests, as
``helm install --dry-run`` prints it) and checked against the objects of the same render: a
port-forward names a Service and a port that exist, an ingress URL is an Ingress's rule, and the
images warned about are the ones the pods would pull.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from chart_testlib import (
    CHART_DIR,
    CI_DIR,
    NAMESPACE,
    ci_scenarios,
    find,
    kernel_images,
    load_values,
    parse,
    pod_specs,
    render,
)

pytestmark = pytest.mark.unit

LABELS = {"Gateway": "gateway", "Notebook": "notebook", "File server": "fileserver"}
PORT_FORWARD = re.compile(
    r"^  (Gateway|Notebook|File server): +kubectl -n (\S+) port-forward svc/(\S+) (\d+):(\d+)\n"
    r" +then http://127\.0\.0\.1:(\d+)/$",
    re.MULTILINE,
)
INGRESS_URL = re.compile(
    r"^  (Gateway|Notebook|File server): +(https?)://([^/]+)(/\S*)  \(Ingress (\S+)\)$",
    re.MULTILINE,
)
NO_HOST = "<the ingress controller's address>"
REGISTRY = "registry.example.org/sandbox"


def render_notes(values: dict[str, Any] | None = None) -> tuple[str, list[dict[str, Any]]]:
    rendered = render(values)
    (notes,) = [text for path, text in rendered.items() if path.endswith("NOTES.txt")]
    return notes, parse(rendered)


def http_services(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """component -> the Service in front of it, for the three HTTP components deployed."""
    return {
        component: service
        for service in find(docs, "Service")
        for component in LABELS.values()
        if service["metadata"]["labels"]["app.kubernetes.io/component"] == component
        and not service["metadata"]["name"].endswith("-metrics")
    }


def pulled_images(docs: list[dict[str, Any]]) -> set[str]:
    """Every image a pod of the release would pull, every kernelspec's kernel pods included."""
    return {
        container["image"]
        for spec in pod_specs(docs).values()
        for container in [*spec.get("initContainers", []), *spec["containers"]]
    } | set(kernel_images(docs).values())


@pytest.mark.parametrize("scenario", ci_scenarios(), ids=lambda p: p.stem)
def test_each_service_has_one_way_in_and_it_exists(scenario: Path) -> None:
    notes, docs = render_notes(load_values(scenario))
    services = http_services(docs)
    ingresses = {d["metadata"]["name"]: d for d in find(docs, "Ingress")}
    seen: dict[str, str] = {}

    for label, namespace, name, local, remote, url_port in PORT_FORWARD.findall(notes):
        component = LABELS[label]
        service = services[component]
        assert (namespace, name) == (service["metadata"]["namespace"], service["metadata"]["name"])
        assert int(remote) in {port["port"] for port in service["spec"]["ports"]}
        assert local == url_port
        assert name not in ingresses, f"{component} has an Ingress, yet NOTES port-forwards"
        seen[component] = "port-forward"

    for label, scheme, host, path, name in INGRESS_URL.findall(notes):
        component = LABELS[label]
        rule = ingresses[name]["spec"]["rules"][0]
        backend = rule["http"]["paths"][0]
        assert backend["backend"]["service"]["name"] == services[component]["metadata"]["name"]
        assert host == rule.get("host", NO_HOST)
        assert path == backend["path"]
        assert scheme == ("https" if ingresses[name]["spec"].get("tls") else "http")
        assert component not in seen
        seen[component] = "ingress"

    assert seen.keys() == services.keys()


def test_a_component_without_its_ingress_rule_is_port_forwarded() -> None:
    values = load_values(CI_DIR / "ingress-values.yaml")
    values["ingress"]["fileserver"]["enabled"] = False
    notes, _ = render_notes(values)
    assert [m[0] for m in INGRESS_URL.findall(notes)] == ["Gateway", "Notebook"]
    assert [m[0] for m in PORT_FORWARD.findall(notes)] == ["File server"]
    assert "https://gateway.sandbox.example.com/  (Ingress" in notes


def test_a_port_change_moves_the_port_forward() -> None:
    notes, _ = render_notes({"gateway": {"port": 9000}})
    assert (
        f"kubectl -n {NAMESPACE} port-forward svc/demo-mini-jupyter-sandbox-gateway 9000:9000\n"
        "                then http://127.0.0.1:9000/" in notes
    )


def test_a_host_less_ingress_says_which_names_get_through() -> None:
    values = {"ingress": {"enabled": True}}
    notes, _ = render_notes(values)
    assert f"http://{NO_HOST}/" in notes
    assert "allowedHosts" in notes and "421" in notes
    # Named hosts, or names listed, need no such note.
    assert "421" not in render_notes({**values, "allowedHosts": ["sandbox.lan"]})[0]


@pytest.mark.parametrize("scenario", ci_scenarios(), ids=lambda p: p.stem)
def test_the_warning_lists_exactly_the_local_images_the_pods_pull(scenario: Path) -> None:
    notes, docs = render_notes(load_values(scenario))
    local = {image for image in pulled_images(docs) if image.startswith("mini-jupyter-sandbox/")}
    warned = set(re.findall(r"^  (mini-jupyter-sandbox/\S+)  \(", notes, re.MULTILINE))
    assert warned == local
    assert ("ImagePullBackOff" in notes) == bool(local)


def test_the_warning_names_the_values_that_move_the_images() -> None:
    notes, _ = render_notes()
    assert "images/build.sh" in notes
    for key in ("gateway", "kernels", "notebook", "fileserver", "controller"):
        assert f"({key}.image.repository, {key}.image.tag)" in notes
    # A kernelspec with an image of its own is named by its place in kernels.specs.
    assert "(kernels.specs[2].image.repository, kernels.specs[2].image.tag)" in notes
    assert "imagePullSecrets" in notes


def test_images_from_a_registry_need_no_warning() -> None:
    values = {
        key: {"image": {"repository": f"{REGISTRY}/{name}"}}
        for key, name in (
            ("gateway", "gateway"),
            ("kernels", "kernel-python"),
            ("notebook", "notebook"),
            ("fileserver", "fileserver"),
            ("controller", "controller"),
        )
    }
    # The kernelspecs with an image of their own name it from the registry too.
    specs = load_values(CHART_DIR / "values.yaml")["kernels"]["specs"]
    for spec in specs:
        if "image" in spec:
            spec["image"]["repository"] = f"{REGISTRY}/{spec['image']['repository'].split('/')[-1]}"
    values["kernels"]["specs"] = specs
    notes, docs = render_notes(values)
    assert all(image.startswith(REGISTRY) for image in pulled_images(docs))
    assert "WARNING" not in notes and "ImagePullBackOff" not in notes


def test_the_tokens_are_one_command_away() -> None:
    notes, _ = render_notes()
    for secret in (
        "gateway-token -o jsonpath='{.data.TENANT}'",
        "notebook-token",
        "fileserver-token",
    ):
        assert f"kubectl -n {NAMESPACE} get secret demo-mini-jupyter-sandbox-{secret}" in notes
