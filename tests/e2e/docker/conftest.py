"""The compose stack, brought up once per test session from the already-built images.

Skips (with the reason) when no Docker engine or no built images are available, unless
``SANDBOX_REQUIRE_DOCKER=1`` — then that is a failure, so CI cannot pass with these tests
skipped.  The stack runs under its own compose project, network, volume and free host ports,
so it never collides with a stack a developer has up on 8888/8889/8080.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from jupyter_kernel_client import GatewayKernelSession
from testkit.compose import ComposeProject, compose_command, docker, write_tenants
from testkit.egress import Records
from testkit.gateway import REPO, free_port
from testkit.languages import LANGUAGES

ARTIFACTS = REPO / "test-artifacts"
VERSION = os.environ.get("SANDBOX_VERSION", "0.1.0")
# The stack's warm pool: python3 as compose has it, and one kernel of every other language.
POOL = {"python3": 2, **{kernelspec: 1 for kernelspec in LANGUAGES}}
IMAGES = (
    "gateway",
    "notebook",
    "fileserver",
    "kernel-python",
    *(f"kernel-{name}" for name in LANGUAGES),
)
PROJECT = os.environ.get("SANDBOX_E2E_PROJECT", "mjse2e")
FILE_SERVER_TOKEN = "e2e-file-server-token"
TOKEN_ENV = "JUPYTER_GATEWAY_AUTH_TOKEN"  # the client's default gateway token
# Gateway tenants of the e2e stack: the tests act as "e2e" (which may read /metrics); "intruder"
# is the other tenant of the isolation probes; "notebook" is the notebook server's.
INTRUDER_MAX = 2
GATEWAY_TOKENS = {
    name: f"e2e-{name}-{uuid.uuid4().hex}" for name in ("e2e", "intruder", "notebook")
}
# Egress: the project's own test hosts (testkit.egress: an HTTPS and HTTP origin with a test CA
# for allowed.test, other.test and also.test, and a logging resolver) in a container on a network
# of their own, which the egress container joins.  The stack's ceiling is EGRESS_CEILING.
TEST_HOSTS_SUBNET = "10.215.0.0/24"
TEST_HOSTS = "10.215.0.10"
KERNEL_SUBNETS = os.environ.get("SANDBOX_KERNEL_SUBNETS", "10.213.0.0/16")
ORIGIN_NAMES = ("allowed.test", "other.test", "also.test")
UPSTREAM_ANSWERS = {"kernelnet.test": KERNEL_SUBNETS.split("/")[0], "loop.test": "127.0.0.1"}
EGRESS_CEILING = (
    "allowed.test,allowed.test:8443,other.test,also.test,"
    "private.test,metadata.test,kernelnet.test,loop.test,unresolvable.test"
)


def kernel_network_name(kernel_id: str) -> str:
    """The private network the launcher gives a kernel."""
    return f"mini-jupyter-sandbox-kernel-{kernel_id}"


def unavailable(reason: str) -> None:
    if os.environ.get("SANDBOX_REQUIRE_DOCKER") == "1":
        pytest.fail(f"SANDBOX_REQUIRE_DOCKER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


class TestHosts(Records):
    """The egress test hosts' container; what reached them is recorded in ``directory``."""

    def __init__(self, project: str) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix=f"{project}-egress-")))
        self.name = f"{project}-egress-test-hosts"

    def start(self) -> str:
        """Start the container; returns the origin CA (PEM) the egress process is to trust."""
        self.stop()
        docker("network", "create", "--subnet", TEST_HOSTS_SUBNET, self.name)
        answers = [f"--answer={name}={address}" for name, address in UPSTREAM_ANSWERS.items()]
        docker(
            "run", "-d", "--name", self.name, "--network", self.name, "--ip", TEST_HOSTS,
            "-v", f"{REPO}:/src:ro", "-v", f"{self.directory}:/records", "-e", "PYTHONPATH=/src",
            "--entrypoint", "python", f"mini-jupyter-sandbox/gateway:{VERSION}",
            "-m", "testkit.egress", "/records", *answers,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not (self.directory / "ready").exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"egress test hosts not ready: {docker('logs', self.name)}")
            time.sleep(0.2)
        return (self.directory / "origin-ca.pem").read_text()

    def join(self, container: str) -> None:
        """Put ``container`` (the egress container) on the test hosts' network, once."""
        attached = docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", container)
        if self.name not in json.loads(attached):
            docker("network", "connect", self.name, container)
        self._keep_bridge_open()

    def _keep_bridge_open(self) -> None:
        """Docker's rule that lets the network's members reach each other, put back if it is
        gone.  The local cluster's NetworkPolicy enforcer, on this same host during the run,
        rewrites the filter table from a snapshot of it; a rule Docker added in between is
        lost (seen in CI: the egress container could no longer reach the test hosts)."""
        bridge = "br-" + docker("network", "inspect", "-f", "{{.Id}}", self.name).strip()[:12]
        rule = ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]
        if subprocess.run(["iptables", "-w", "-C", *rule], capture_output=True).returncode:
            subprocess.run(["iptables", "-w", "-I", *rule], check=True)

    def stop(self) -> None:
        docker("rm", "-f", self.name, check=False)
        docker("network", "rm", self.name, check=False)


@dataclass
class Stack(ComposeProject):
    """Addresses and names of the running e2e stack."""

    notebook_port: int
    file_server_port: int
    shared_volume: str
    token: str = FILE_SERVER_TOKEN
    test_hosts: TestHosts | None = None
    _containers: dict[str, str] = field(default_factory=dict)

    @property
    def egress_ca_volume(self) -> str:
        return f"{self.project}-egress-ca"

    @property
    def notebook_url(self) -> str:
        return f"http://127.0.0.1:{self.notebook_port}"

    def notebook_api(self) -> requests.Session:
        """A session on the notebook's REST API, authorised as its page is (no token locally:
        the ``_xsrf`` cookie, echoed in a header)."""
        api = requests.Session()
        api.get(f"{self.notebook_url}/tree", timeout=30)
        api.headers["X-XSRFToken"] = api.cookies.get("_xsrf", "")
        return api

    @property
    def file_server_url(self) -> str:
        return f"http://127.0.0.1:{self.file_server_port}"

    def kernel_containers(self) -> list[dict[str, Any]]:
        """`docker inspect` of every running kernel container of this stack."""
        ids = self.kernel_container_ids()
        return json.loads(docker("inspect", *ids)) if ids else []

    def kernel_networks(self) -> set[str]:
        """Names of this stack's kernel networks (names only: one may vanish while we look)."""
        return set(
            docker(
                "network",
                "ls",
                "--format",
                "{{.Name}}",
                "--filter",
                "label=component=kernel-network",
                "--filter",
                f"label={self.deployment_label}",
            ).split()
        )

    def kernel_container(self, kernel_id: str) -> dict[str, Any]:
        ids = docker("ps", "-q", "--filter", f"label=kernel_id={kernel_id}").split()
        assert len(ids) == 1, f"expected one container for kernel {kernel_id}, found {ids}"
        return dict(json.loads(docker("inspect", ids[0]))[0])

    def wait_for_kernels(self, timeout: float = 90) -> list[str]:
        """The ids of the kernels the gateway lists, once it answers (after a restart)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                response = requests.get(
                    f"{self.gateway_http}/api/kernels", headers=self.auth, timeout=2
                )
                if response.ok:
                    return [kernel["id"] for kernel in response.json()]
            time.sleep(0.5)
        raise RuntimeError(f"the gateway did not come back within {timeout} s")

    def crash_gateway(self) -> list[str]:
        """SIGKILL the gateway container, start it again and return the ids of the kernels it
        lists once it answers."""
        gateway = self.container("gateway")
        docker("kill", gateway)
        docker("start", gateway)
        return self.wait_for_kernels()

    def assert_readopted(self, kernel_id: str) -> None:
        """A new session on ``kernel_id`` finds the ``remembered = 41`` set before the gateway
        went down: the gateway re-adopted the kernel under its id."""
        with GatewayKernelSession(
            self.gateway_http,
            self.gateway_ws,
            "python3",
            kernel_id=kernel_id,
            gateway_token=self.gateway_token,
        ) as again:
            assert str(again.execute("remembered + 1")) == "42"

    def wait_pool_ready(
        self, kernelspec: str = "python3", size: int = 2, timeout: float = 120
    ) -> None:
        """Until the gateway's warm pool for ``kernelspec`` holds ``size`` ready kernels."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if (
                    self.metric("sandbox_pool_kernels", kernelspec=kernelspec, state="ready")
                    >= size
                ):
                    return
            time.sleep(0.25)
        raise RuntimeError(
            f"the {kernelspec} pool did not reach {size} ready kernels in {timeout} s"
        )

    def wait_pools_ready(self, timeout: float = 120) -> None:
        """Until every pool of the stack (``POOL``) is full."""
        for kernelspec, size in POOL.items():
            self.wait_pool_ready(kernelspec, size, timeout)

    def wait_healthy(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        endpoints = {
            "gateway": f"{self.gateway_http}/api/kernelspecs",
            "notebook": f"{self.notebook_url}/api/status",
            "fileserver": f"{self.file_server_url}/health",
        }
        pending = dict(endpoints)
        while pending and time.monotonic() < deadline:
            for name, url in list(pending.items()):
                headers = self.auth if name == "gateway" else {}
                try:
                    if requests.get(url, headers=headers, timeout=2).status_code == 200:
                        del pending[name]
                except requests.RequestException:
                    pass
            if pending:
                time.sleep(0.5)
        if pending:
            logs = self.run_compose("logs", "--tail=40").stdout
            raise RuntimeError(f"services not healthy after {timeout}s: {sorted(pending)}\n{logs}")


@pytest.fixture(autouse=True)
def gateway_token(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every client session a test opens acts as tenant "e2e" (the client's default token).
    Module-scoped fixtures, set up before this runs, pass ``gateway_token=stack.gateway_token``."""
    monkeypatch.setenv(TOKEN_ENV, stack.gateway_token)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """The compose stack under test (notebook, gateway, file server, kernel image)."""
    compose = compose_command()
    if compose is None or shutil.which("docker") is None:
        unavailable("no Docker CLI / Compose found (install docker.io and docker-compose)")
        raise AssertionError("unreachable")
    if subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode != 0:
        unavailable("no Docker engine reachable (start dockerd)")
    missing = [
        name
        for name in IMAGES
        if subprocess.run(
            ["docker", "image", "inspect", f"mini-jupyter-sandbox/{name}:{VERSION}"],
            capture_output=True,
        ).returncode
        != 0
    ]
    if missing:
        unavailable(f"images not built: {', '.join(missing)} (run images/build.sh)")

    env = dict(os.environ)
    stack = Stack(
        project=PROJECT,
        compose=compose,
        env=env,
        gateway_port=free_port(),
        gateway_token=GATEWAY_TOKENS["e2e"],
        notebook_port=free_port(),
        file_server_port=free_port(),
        shared_volume=f"{PROJECT}-shared",
    )
    tenants = write_tenants(
        Path(tempfile.mkdtemp(prefix=f"{PROJECT}-")) / "tenants.json",
        GATEWAY_TOKENS,
        "e2e",
        {"intruder": INTRUDER_MAX},
    )
    env.update(
        {
            "SANDBOX_VERSION": VERSION,
            "GATEWAY_PORT": str(stack.gateway_port),
            "NOTEBOOK_PORT": str(stack.notebook_port),
            "FILE_SERVER_PORT": str(stack.file_server_port),
            "SANDBOX_SHARED_VOLUME": stack.shared_volume,
            "FILE_SERVER_TOKEN": FILE_SERVER_TOKEN,
            "SANDBOX_TENANTS_FILE_HOST": str(tenants),
            "NOTEBOOK_GATEWAY_TOKEN": GATEWAY_TOKENS["notebook"],
            "SANDBOX_BIND_ADDRESS": "127.0.0.1",
            # Not the defaults: test_containment checks that they reach the launcher.
            "SANDBOX_KERNEL_TMP_SIZE": "48m",
            "SANDBOX_POOL": ",".join(f"{name}={size}" for name, size in POOL.items()),
            "SANDBOX_ALLOWED_KERNEL_IMAGES": f"mini-jupyter-sandbox/kernel-python:{VERSION}"
            ",mini-jupyter-sandbox/kernel-python:latest",
            # Egress on, as an operator would run it: every kernel network has the egress
            # container on it, and the isolation tests probe kernels with it there.
            "SANDBOX_EGRESS_ALLOW": EGRESS_CEILING,
            "SANDBOX_EGRESS_CONTROL_TOKEN": uuid.uuid4().hex,
            "SANDBOX_EGRESS_CA_VOLUME": stack.egress_ca_volume,
            "SANDBOX_EGRESS_DNS": f"{TEST_HOSTS}:53",
            "SANDBOX_EGRESS_RESOLVE": ",".join(f"{name}={TEST_HOSTS}" for name in ORIGIN_NAMES),
        }
    )
    # Leftovers of an interrupted earlier run would hold the network and volume.
    stack.down()
    stack.test_hosts = TestHosts(PROJECT)
    try:
        env["SANDBOX_EGRESS_ORIGIN_CA"] = stack.test_hosts.start()
        up = stack.run_compose("up", "-d", "--no-build")
        if up.returncode != 0:
            raise RuntimeError(f"compose up failed:\n{up.stdout}\n{up.stderr}")
        stack.test_hosts.join(stack.container("egress"))
        stack.wait_healthy()
        yield stack
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "compose-e2e.log").write_text(stack.run_compose("logs").stdout)
        stack.down(stack.shared_volume, stack.egress_ca_volume)
        stack.test_hosts.stop()
