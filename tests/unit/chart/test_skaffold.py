"""skaffold.yaml builds the chart's five images and hands each to the chart's values.

No skaffold binary runs here (none can be downloaded); this checks the file's shape and, more
usefully, that its value templates name real artifacts and real chart values: the chart is
rendered with the values Skaffold would set, and every image of the release must come out as
the built one.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from chart_testlib import CHART_DIR, REPO_ROOT, kernel_pod, pod_specs, render_docs

pytestmark = pytest.mark.unit

SKAFFOLD = yaml.safe_load((REPO_ROOT / "skaffold.yaml").read_text())
CHART_VALUES = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
COMPONENTS = {
    "gateway": "gateway",
    "kernels": "kernel-python",
    "notebook": "notebook",
    "fileserver": "fileserver",
    "controller": "controller",
}
TEMPLATE = re.compile(r"^\{\{\.IMAGE_(REPO|TAG)_(\w+)\}\}$")


def _sanitized(image: str) -> str:
    # Skaffold exposes an artifact as IMAGE_REPO_<name>/IMAGE_TAG_<name>, with every
    # character that is not a letter, digit or "_" replaced by "_".
    return re.sub(r"[^A-Za-z0-9_]", "_", image)


def _release() -> dict[str, Any]:
    (release,) = SKAFFOLD["deploy"]["helm"]["releases"]
    assert isinstance(release, dict)
    return release


def test_shape() -> None:
    assert re.fullmatch(r"skaffold/v4beta\d+", SKAFFOLD["apiVersion"])
    assert SKAFFOLD["kind"] == "Config"
    release = _release()
    assert (REPO_ROOT / release["chartPath"]).resolve() == CHART_DIR


def test_artifacts_are_the_chart_images() -> None:
    artifacts = {a["image"]: a for a in SKAFFOLD["build"]["artifacts"]}
    expected = {CHART_VALUES[key]["image"]["repository"]: name for key, name in COMPONENTS.items()}
    assert set(artifacts) == set(expected)
    for image, name in expected.items():
        assert artifacts[image]["context"] == "."
        assert artifacts[image]["docker"]["dockerfile"] == f"images/{name}/Dockerfile"


@pytest.mark.parametrize("name", sorted(COMPONENTS.values()))
def test_every_artifact_has_its_dockerfile(name: str) -> None:
    assert (REPO_ROOT / "images" / name / "Dockerfile").is_file()


def test_every_value_template_names_an_artifact_and_a_chart_value() -> None:
    images = {_sanitized(a["image"]) for a in SKAFFOLD["build"]["artifacts"]}
    templates = _release()["setValueTemplates"]
    assert len(templates) == 2 * len(images)
    for key, template in templates.items():
        match = TEMPLATE.match(template)
        assert match, f"{key}: {template}"
        assert match[2] in images, f"{key} refers to an unknown artifact"
        node: Any = CHART_VALUES
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{key} is not a chart value"
            node = node[part]


def test_chart_renders_with_the_built_images() -> None:
    # Play Skaffold: substitute each template with what it would set, render, look at the pods.
    # A distinct tag per artifact, so that a template pointing at the wrong artifact shows.
    built = {
        _sanitized(a["image"]): (f"localhost:5000/{a['image']}", f"dev-{i}")
        for i, a in enumerate(SKAFFOLD["build"]["artifacts"])
    }
    values: dict[str, Any] = {}
    for key, template in {**_release()["setValueTemplates"], **_release()["setValues"]}.items():
        match = TEMPLATE.match(str(template))
        value = (
            (built[match[2]][0] if match[1] == "REPO" else built[match[2]][1])
            if match
            else template
        )
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    docs = render_docs(values)
    images = {
        c["image"]
        for spec in pod_specs(docs).values()
        for c in spec.get("initContainers", []) + spec["containers"]
    }
    assert images == {f"{repo}:{tag}" for repo, tag in built.values()}
    assert (
        kernel_pod(docs)["spec"]["containers"][0]["image"]
        == "localhost:5000/mini-jupyter-sandbox/kernel-python:"
        + built[_sanitized("mini-jupyter-sandbox/kernel-python")][1]
    )
