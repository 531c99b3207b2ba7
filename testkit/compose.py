"""The Docker stack for the e2e tests and the benches: the docker CLI, one compose project of the
repository's ``docker-compose.yaml`` (its containers, its kernel containers, what outlived it)
and the gateway's Prometheus metrics."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import requests

from testkit.gateway import REPO

COMPOSE_FILE = REPO / "docker-compose.yaml"
DEPLOYMENT_LABEL = "mini-jupyter-sandbox.deployment"
"""The gateway labels a stack's kernel containers and networks with this, set to the project."""


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    """Run a docker CLI command and return its stdout."""
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def compose_command() -> list[str] | None:
    """``docker-compose`` or ``docker compose``, whichever this machine has (None: neither)."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


@dataclass
class ComposeProject:
    """One compose project of the repository's ``docker-compose.yaml``, run with ``env``, its
    gateway published on ``gateway_port`` of 127.0.0.1."""

    project: str
    compose: list[str]
    env: dict[str, str]
    gateway_port: int
    gateway_token: str
    """The gateway token of the tenant the tests and benches act as (it may read /metrics)."""

    compose_timeout: ClassVar[float] = 300
    """Seconds a compose command may take unless ``run_compose`` is told otherwise."""

    @property
    def gateway_http(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def gateway_ws(self) -> str:
        return f"ws://127.0.0.1:{self.gateway_port}"

    @property
    def auth(self) -> dict[str, str]:
        """The headers of a request to the gateway as that tenant."""
        return {"Authorization": f"token {self.gateway_token}"} if self.gateway_token else {}

    def metric(self, name: str, **labels: str) -> float:
        """The gateway's Prometheus samples of ``name`` with ``labels``, summed (0: none yet)."""
        return metric(self.gateway_http, name, headers=self.auth, **labels)

    @property
    def deployment_label(self) -> str:
        """The label the gateway puts on this project's kernel containers and networks."""
        return f"{DEPLOYMENT_LABEL}={self.project}"

    def run_compose(
        self, *args: str, timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.compose, "-p", self.project, "-f", str(COMPOSE_FILE), *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=self.compose_timeout if timeout is None else timeout,
            check=False,
        )

    def container(self, service: str) -> str:
        """The container id of a compose service."""
        done = self.run_compose("ps", "-q", service)
        container_id = done.stdout.strip()
        if not container_id:
            raise RuntimeError(f"service {service} has no container: {done.stderr}")
        return container_id

    def kernel_container_ids(self, *labels: str) -> list[str]:
        """Full ids of this project's running kernel containers that also carry ``labels``
        (each ``key=value``)."""
        filters = ["label=component=kernel", f"label={self.deployment_label}"]
        filters += [f"label={label}" for label in labels]
        options = [option for value in filters for option in ("--filter", value)]
        return docker("ps", "-q", "--no-trunc", *options).split()

    def remove_leftovers(self) -> None:
        """Kernel containers and networks of this project that outlived it (an interrupted run,
        a gateway killed before it removed them)."""
        label = f"label={self.deployment_label}"
        ids = docker("ps", "-aq", "--filter", label, check=False).split()
        if ids:
            docker("rm", "-f", *ids, check=False)
        networks = docker("network", "ls", "-q", "--filter", label, check=False).split()
        if networks:
            docker("network", "rm", *networks, check=False)

    def down(self, *volumes: str) -> None:
        """``compose down``, then the project's leftovers and the named ``volumes``."""
        self.run_compose("down", "-v", "--remove-orphans")
        self.remove_leftovers()
        for volume in volumes:
            docker("volume", "rm", volume, check=False)


def write_tenants(
    path: Path, tokens: dict[str, str], metrics: str, caps: dict[str, int] | None = None
) -> Path:
    """A gateway tenants file: ``tokens`` maps each tenant to its token; tenant ``metrics`` may
    read /metrics; ``caps`` holds the tenants' ``max_kernels``."""
    tenants: dict[str, dict[str, object]] = {
        name: {"token": token, "metrics": name == metrics} for name, token in tokens.items()
    }
    for name, cap in (caps or {}).items():
        tenants[name]["max_kernels"] = cap
    path.write_text(json.dumps({"tenants": tenants}))
    path.chmod(0o600)
    return path


def metric_samples(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of each sample in a Prometheus text exposition."""
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, label_text = head.partition("{")
        labels = {}
        for pair in label_text.rstrip("}").split(","):
            if "=" in pair:
                key, _, quoted = pair.partition("=")
                labels[key] = quoted.strip('"')
        yield name, labels, float(value)


def metric(
    gateway_http: str, name: str, headers: dict[str, str] | None = None, **labels: str
) -> float:
    """The sum of the gateway's samples of ``name`` whose labels include ``labels`` (0 when it
    has none yet)."""
    response = requests.get(f"{gateway_http}/metrics", headers=headers, timeout=10)
    response.raise_for_status()
    text = response.text
    return sum(
        (
            value
            for sample, have, value in metric_samples(text)
            if sample == name and labels.items() <= have.items()
        ),
        0.0,
    )
