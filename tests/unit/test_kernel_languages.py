"""Every kernelspec under kernels/ is wired as kernels/README.md says a language is added: its
image, the build, the compose stack, the gateway image, the warm pool, the chart and the probes.
The three non-Python languages were added exactly that way; a fourth that skips a step fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox_gateway.pool.rules import claim_code
from testkit.languages import LANGUAGES

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
KERNELSPECS = {
    path.parent.name: json.loads(path.read_text())
    for path in sorted((REPO / "kernels").glob("*/kernel.json"))
}
COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
CHART_SPECS = {
    spec["name"]: spec
    for spec in yaml.safe_load(
        (REPO / "charts" / "mini-jupyter-sandbox" / "values.yaml").read_text()
    )["kernels"]["specs"]
}
GATEWAY_DOCKERFILE = (REPO / "images" / "gateway" / "Dockerfile").read_text()
BUILD_SH = (REPO / "images" / "build.sh").read_text()
IMAGE = re.compile(r"^mini-jupyter-sandbox/(kernel-[a-z0-9-]+):[^:]+$")


def image_dir(spec: dict[str, Any]) -> str:
    match = IMAGE.match(spec["metadata"]["process_proxy"]["config"]["image_name"])
    assert match, spec["metadata"]["process_proxy"]["config"]["image_name"]
    return match.group(1)


@pytest.mark.parametrize("name", sorted(KERNELSPECS))
def test_the_kernelspec_names_its_image_in_both_places_and_says_where_it_runs(name: str) -> None:
    spec = KERNELSPECS[name]
    argv = spec["argv"]
    assert (
        argv[argv.index("--image") + 1] == spec["metadata"]["process_proxy"]["config"]["image_name"]
    )
    assert spec["display_name"].endswith("container)")
    assert (REPO / "images" / image_dir(spec) / "Dockerfile").is_file()


@pytest.mark.parametrize("name", sorted(KERNELSPECS))
def test_the_image_is_built_by_build_sh_and_compose(name: str) -> None:
    directory = image_dir(KERNELSPECS[name])
    (names,) = re.findall(r"^    names=\((kernel-python .*)\)$", BUILD_SH, re.MULTILINE)
    assert directory in names.split()
    services = {
        service_name: service
        for service_name, service in COMPOSE["services"].items()
        if service.get("build", {}).get("dockerfile") == f"images/{directory}/Dockerfile"
    }
    assert len(services) == 1, services
    ((service_name, service),) = services.items()
    assert service["image"] == f"mini-jupyter-sandbox/{directory}:${{SANDBOX_VERSION:-0.1.0}}"
    assert service["network_mode"] == "none" and service["restart"] == "no"
    depends = COMPOSE["services"]["gateway"]["depends_on"][service_name]
    assert depends == {"condition": "service_completed_successfully"}


@pytest.mark.parametrize("name", sorted(KERNELSPECS))
def test_the_gateway_image_ships_the_kernelspec(name: str) -> None:
    assert f"COPY kernels/{name} /opt/sandbox/share/jupyter/kernels/{name}\n" in GATEWAY_DOCKERFILE


@pytest.mark.parametrize("name", sorted(KERNELSPECS))
def test_the_warm_pool_can_claim_a_kernel_of_its_language(name: str) -> None:
    code = claim_code(
        {"KERNEL_PROJECT": "x", "KERNEL_WORKING_DIR": "/data/shared"}, KERNELSPECS[name]["language"]
    )
    assert "KERNEL_PROJECT" in code and "/data/shared" in code


@pytest.mark.parametrize("name", sorted(KERNELSPECS))
def test_the_chart_offers_it_with_the_same_language_image_and_interrupt(name: str) -> None:
    spec, chart = KERNELSPECS[name], CHART_SPECS[name]
    assert chart["language"] == spec["language"]
    assert chart["interruptMode"] == spec.get("interrupt_mode", "")
    assert chart["lateOutputGrace"] == spec["metadata"].get("sandbox", {}).get(
        "late_output_grace", 0
    )
    directory = image_dir(spec)
    # kernel-python is kernels.image, which an empty repository stands for.
    expected = "" if directory == "kernel-python" else f"mini-jupyter-sandbox/{directory}"
    assert chart["image"]["repository"] == expected
    assert set(CHART_SPECS) == set(KERNELSPECS)


NON_PYTHON = sorted(name for name, spec in KERNELSPECS.items() if spec["language"] != "python")


def test_the_three_languages_are_there() -> None:
    assert NON_PYTHON == ["bash", "javascript", "r"]


@pytest.mark.parametrize("name", NON_PYTHON)
def test_another_language_has_its_probes_logo_and_the_shared_launcher(name: str) -> None:
    assert LANGUAGES[name].language == KERNELSPECS[name]["language"]
    assert (REPO / "kernels" / name / "logo-svg.svg").read_text().startswith("<svg")
    dockerfile = (REPO / "images" / image_dir(KERNELSPECS[name]) / "Dockerfile").read_text()
    assert "FROM ${BASE_IMAGE}" in dockerfile and "USER 1000:100" in dockerfile
    assert "COPY kernels/launcher /tmp/launcher\nRUN /tmp/launcher/install.sh" in dockerfile
    (cmd,) = re.findall(
        r"^CMD (\[.*?\])$", dockerfile.replace("\\\n", " "), re.MULTILINE | re.DOTALL
    )
    argv = json.loads(cmd)
    assert argv[:4] == ["python", "-I", "/usr/local/lib/sandbox/launch_kernel.py", "--"]
    assert "{connection_file}" in argv[4:]
