"""The gateway's watch of kernel containers (``sandbox_gateway.proxies.container_watch``)
against the real Docker engine: it follows what happens to the containers of its deployment and
no other, and answers "cannot tell" whenever it is not following the engine's events.

No compose stack and no gateway: the containers are plain ones of the kernel image, labelled as
the launcher labels a kernel's, under a deployment label of their own.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import docker as docker_sdk
import pytest

from sandbox_gateway.proxies.container_watch import ContainerWatch, watched_poll
from testkit.compose import DEPLOYMENT_LABEL

from .conftest import VERSION, docker, unavailable

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

IMAGE = f"mini-jupyter-sandbox/kernel-python:{VERSION}"


@pytest.fixture
def deployment() -> Iterator[str]:
    if subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode != 0:
        unavailable("no Docker engine reachable (start dockerd)")
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode:
        unavailable(f"image not built: {IMAGE} (run images/build.sh)")
    name = f"watch-test-{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        ids = docker("ps", "-aq", "--filter", f"label={DEPLOYMENT_LABEL}={name}", check=False)
        ids += docker("ps", "-aq", "--filter", f"label=watch-test={name}", check=False)
        if ids.split():
            docker("rm", "-f", *ids.split(), check=False)


def kernel_container(deployment: str, kernel_id: str, *, other: bool = False) -> str:
    labels = ["--label", "component=kernel", "--label", f"kernel_id={kernel_id}"]
    if other:  # the same kernel id in another deployment
        labels += ["--label", f"{DEPLOYMENT_LABEL}=another", "--label", f"watch-test={deployment}"]
    else:
        labels += ["--label", f"{DEPLOYMENT_LABEL}={deployment}"]
    return docker(
        "run", "-d", *labels, "--entrypoint", "sleep", IMAGE, "120"
    ).strip()  # fmt: skip


def until(what: str, check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_the_watch_follows_its_deployments_kernel_containers_and_no_other(
    deployment: str,
) -> None:
    before, during, stranger = (str(uuid.uuid4()) for _ in range(3))
    kernel_container(deployment, before)  # running before the watch starts: from its listing
    watch = ContainerWatch(
        docker_sdk.from_env().api, [f"{DEPLOYMENT_LABEL}={deployment}", "component=kernel"]
    )
    assert watch.state(before) is None  # not following yet: it cannot tell
    watch.start()
    try:
        until("the listing", lambda: watch.state(before) == "running")
        container = kernel_container(deployment, during)
        kernel_container(deployment, stranger, other=True)
        until("the start event", lambda: watch.state(during) == "running")
        assert watch.state(stranger) is None  # another deployment's container is not watched

        docker("kill", container)
        until("the death event", lambda: watch.state(during) == "exited")
        asked: list[str] = []
        alive = {"created", "running"}
        assert watched_poll(watch, during, alive, lambda: asked.append(during)) is False
        assert watched_poll(watch, before, alive, lambda: asked.append(before)) is None
        assert asked == []  # both answered from the watch, without the engine
        docker("rm", container)
        until("the destroy event", lambda: watch.state(during) is None)
        assert watched_poll(watch, during, alive, lambda: asked.append(during) or False) is False
        assert asked == [during]  # gone from the watch: the engine is asked
    finally:
        watch.stop()
    until("the watch to stop following", lambda: watch.state(before) is None)
