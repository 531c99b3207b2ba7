"""docker-compose.yaml hands every HTTP service the Host names a user adds in ``.env``.

A name in ``SANDBOX_ALLOWED_HOSTS`` that one service does not receive leaves that service
answering 421 to it while the others answer.  Each service's environment is interpolated here
as compose does it and then read by that service's own allow-list code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from fileserver.settings import Settings
from sandbox_gateway.http import hosts

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
# What a user's .env holds besides the secrets (and the secrets compose requires).
USER_ENV = {
    "SANDBOX_ALLOWED_HOSTS": "sandbox.example.org,.corp.example",
    "FILE_SERVER_TOKEN": "t" * 32,
    "NOTEBOOK_GATEWAY_TOKEN": "n" * 32,
    "SANDBOX_EGRESS_CONTROL_TOKEN": "e" * 32,
}

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$\$")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:-default}``, ``${NAME-default}``, ``${NAME:?error}``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.groups()
        present = name in env and (env[name] != "" or operator in ("-", "?"))
        if present:
            return env[name]
        if operator in (":?", "?"):
            raise AssertionError(f"compose refuses to start: {argument}")
        return argument if operator else ""

    return _VARIABLE.sub(replace, value)


def service_env(service: str, env: Mapping[str, str]) -> dict[str, str]:
    environment = COMPOSE["services"][service].get("environment") or {}
    assert isinstance(environment, dict), f"{service}: environment as a mapping"
    return {key: interpolate(str(value), env) for key, value in environment.items()}


def fileserver_hosts(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> frozenset[str]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings().host_allow_list


def tornado_hosts(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> frozenset[str]:
    return hosts.allowed_hosts(env)


# Each HTTP service, and the code that reads its allow-list (sandbox_gateway.config and the
# notebook's config call hosts.apply(), which reads hosts.allowed_hosts()).
READERS: dict[str, Callable[[Mapping[str, str], pytest.MonkeyPatch], frozenset[str]]] = {
    "gateway": tornado_hosts,
    "notebook": tornado_hosts,
    "fileserver": fileserver_hosts,
}


@pytest.fixture(autouse=True)
def _no_host_settings_of_this_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SANDBOX_ALLOWED_HOSTS", "FILE_SERVER_ALLOWED_HOSTS"):
        monkeypatch.delenv(name, raising=False)


def test_every_published_service_is_checked() -> None:
    published = {name for name, service in COMPOSE["services"].items() if service.get("ports")}
    assert published == READERS.keys()


@pytest.mark.parametrize("service", sorted(READERS))
def test_a_name_added_in_env_reaches_the_service(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    allowed = READERS[service](service_env(service, USER_ENV), monkeypatch)
    assert {"sandbox.example.org", ".corp.example"} <= allowed
    # The other services reach it by its service name.
    assert service in allowed


@pytest.mark.parametrize("service", sorted(READERS))
def test_without_env_the_service_still_starts(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {k: v for k, v in USER_ENV.items() if k.endswith("TOKEN")}
    allowed = READERS[service](service_env(service, secrets), monkeypatch)
    assert allowed >= {"localhost", "127.0.0.1", "[::1]", service}


def test_file_server_only_names_reach_the_file_server(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**USER_ENV, "FILE_SERVER_ALLOWED_HOSTS": "files.example.org"}
    assert "files.example.org" in fileserver_hosts(service_env("fileserver", env), monkeypatch)
    assert "files.example.org" not in tornado_hosts(service_env("gateway", env), monkeypatch)
