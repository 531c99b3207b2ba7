"""The gateway image starts the kernel image of its own version (SANDBOX_VERSION).

compose and images/build.sh tag every image with SANDBOX_VERSION; the gateway image's
kernelspecs must then name ``mini-jupyter-sandbox/kernel-python:<that version>``, or a stack
built as 0.2.0 keeps starting 0.1.0 kernels (or none, where only 0.2.0 was built).  The build
step that writes the tag (images/gateway/set_kernel_image.py) is run here as the Dockerfile runs
it, on copies of the repository's kernelspecs; its wiring is read from the Dockerfile, compose
and build.sh.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "images" / "gateway" / "set_kernel_image.py"
DOCKERFILE = (REPO / "images" / "gateway" / "Dockerfile").read_text()
BUILD_SH = (REPO / "images" / "build.sh").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
KERNELSPECS = sorted(path.parent for path in (REPO / "kernels").glob("*/kernel.json"))
KERNEL_REPOSITORY = "mini-jupyter-sandbox/kernel-python"
KERNEL_REPOSITORY_PREFIX = "mini-jupyter-sandbox/kernel-"


def images_of(spec: dict[str, Any]) -> tuple[str, str]:
    """(process proxy image_name, launcher --image) of a kernelspec."""
    argv = spec["argv"]
    return (
        spec["metadata"]["process_proxy"]["config"]["image_name"],
        argv[argv.index("--image") + 1],
    )


def run(version: str, *directories: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", str(SCRIPT), version, *map(str, directories)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def copies(tmp_path: Path) -> list[Path]:
    """The repository's kernelspecs, copied as the Dockerfile copies them."""
    return [Path(shutil.copytree(path, tmp_path / path.name)) for path in KERNELSPECS]


def test_every_kernelspec_gets_the_version_in_both_places(copies: list[Path]) -> None:
    assert len(copies) >= 2
    done = run("7.7.7", *copies)
    assert done.returncode == 0, done.stderr
    for copy in copies:
        written = json.loads((copy / "kernel.json").read_text())
        original = json.loads((REPO / "kernels" / copy.name / "kernel.json").read_text())
        repository = images_of(original)[0].rpartition(":")[0]
        assert repository.startswith(KERNEL_REPOSITORY_PREFIX)
        assert images_of(written) == (f"{repository}:7.7.7",) * 2
        # Nothing else of the kernelspec changes.
        for spec in (written, original):
            del spec["argv"][spec["argv"].index("--image") + 1]
            del spec["metadata"]["process_proxy"]["config"]["image_name"]
        assert written == original


def test_a_registry_port_is_not_taken_for_the_tag(copies: list[Path]) -> None:
    path = copies[0] / "kernel.json"
    spec = json.loads(path.read_text())
    image = "registry.example.org:5000/sandbox/kernel-python"
    argv = spec["argv"]
    spec["metadata"]["process_proxy"]["config"]["image_name"] = argv[argv.index("--image") + 1] = (
        image
    )
    path.write_text(json.dumps(spec))
    assert run("2.0.0", copies[0]).returncode == 0
    assert images_of(json.loads(path.read_text())) == (f"{image}:2.0.0",) * 2


@pytest.mark.parametrize("version", ["", "1.0 rc", "-1", "a:b", "x" * 129])
def test_a_version_that_is_no_docker_tag_fails_the_build(copies: list[Path], version: str) -> None:
    before = (copies[0] / "kernel.json").read_text()
    done = run(version, copies[0])
    assert done.returncode != 0
    assert (copies[0] / "kernel.json").read_text() == before


def test_a_kernelspec_whose_two_images_differ_fails_the_build(copies: list[Path]) -> None:
    path = copies[0] / "kernel.json"
    spec = json.loads(path.read_text())
    spec["metadata"]["process_proxy"]["config"]["image_name"] = "other/kernel:1"
    path.write_text(json.dumps(spec))
    done = run("7.7.7", copies[0])
    assert done.returncode != 0 and "differ" in done.stderr


def test_the_gateway_build_retags_every_kernelspec_it_copies() -> None:
    lines = DOCKERFILE.replace("\\\n", " ").splitlines()
    copied = {
        Path(words[1]).name: words[2]
        for words in (line.split() for line in lines)
        if len(words) == 3 and words[0] == "COPY" and words[1].startswith("kernels/")
    }
    assert sorted(copied) == [path.name for path in KERNELSPECS]
    (arg,) = [i for i, line in enumerate(lines) if line.startswith("ARG SANDBOX_VERSION")]
    (step,) = [i for i, line in enumerate(lines) if "set_kernel_image.py" in line and "RUN" in line]
    words = shlex.split(lines[step])
    assert words[words.index("/tmp/set_kernel_image.py") + 1] == "$SANDBOX_VERSION"
    assert set(copied.values()) <= set(words)
    copies = [i for i, line in enumerate(lines) if line.startswith("COPY kernels/")]
    assert max(copies) < arg < step


def test_compose_and_build_sh_pass_the_version_they_tag_with() -> None:
    services = COMPOSE["services"]
    tag = services["kernel-image"]["image"].removeprefix(f"{KERNEL_REPOSITORY}:")
    assert tag.startswith("${SANDBOX_VERSION")
    assert services["gateway"]["build"]["args"]["SANDBOX_VERSION"] == tag
    assert services["gateway"]["image"].endswith(f":{tag}")
    assert '--build-arg "SANDBOX_VERSION=$version"' in BUILD_SH
    assert '--tag "mini-jupyter-sandbox/$name:$version"' in BUILD_SH


def test_one_default_version_everywhere() -> None:
    """An image built without the argument, compose without SANDBOX_VERSION, build.sh and the
    kernelspecs in the repository (what a gateway run from source starts) agree."""
    (dockerfile,) = re.findall(r"^ARG SANDBOX_VERSION=(\S+)$", DOCKERFILE, re.MULTILINE)
    (build_sh,) = re.findall(r'version="\$\{SANDBOX_VERSION:-([^}]+)\}"', BUILD_SH)
    compose = re.fullmatch(
        r"\$\{SANDBOX_VERSION:-([^}]+)\}",
        COMPOSE["services"]["gateway"]["build"]["args"]["SANDBOX_VERSION"],
    )
    assert compose is not None
    sources = {images_of(json.loads((path / "kernel.json").read_text()))[0] for path in KERNELSPECS}
    assert {dockerfile, build_sh, compose.group(1)} == {tag.rpartition(":")[2] for tag in sources}
