"""The sandbox's settings (``sandbox_gateway.settings``): config values in their variables'
syntax, read by the same parsers as the variables, and no variable without a setting."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from traitlets import List as TList
from traitlets import TraitError, Unicode
from traitlets.config import Application, Config, Configurable

from sandbox_gateway import config as sandbox_config
from sandbox_gateway import settings
from sandbox_gateway.admission.limits import LimitSettings
from sandbox_gateway.http.hosts import allowed_hosts
from sandbox_gateway.http.messages import MessageSettings
from sandbox_gateway.pool.rules import PoolSettings

PACKAGE = Path(settings.__file__).parent
SANDBOX_NAME = re.compile(r"SANDBOX_[A-Z0-9_]+")


def configured(**sections: dict[str, object]) -> dict[str, str]:
    config = Config()
    for section, values in sections.items():
        for name, value in values.items():
            config[section][name] = value
    return settings.configured(Configurable(config=config))


def test_every_variable_the_package_reads_is_a_setting() -> None:
    # A new SANDBOX_* variable without a trait fails here: give it one in settings.py.
    read = {
        name
        for path in PACKAGE.rglob("*.py")
        if path.name != "settings.py"
        for name in SANDBOX_NAME.findall(path.read_text())
    }
    names = settings.env_names()
    assert read, "no SANDBOX_* name found: the pattern or the path is wrong"
    for name in sorted(read):
        if name.endswith("_"):  # a prefix the code completes, SANDBOX_RESPONSE_ + field name
            assert any(env.startswith(name) for env in names), name
        else:
            assert name in names or name in settings.NOT_GATEWAY_SETTINGS, name
    # ...and no setting stands for a variable nothing reads.
    for env in names:
        assert env in read or any(env.startswith(p) for p in read if p.endswith("_")), env


def test_every_setting_names_its_variable_and_default_in_its_help() -> None:
    for cls in settings.CLASSES:
        for name, trait in cls.class_traits(env=lambda env: env is not None).items():
            env = trait.metadata["env"]
            assert f"Not set in config: ${env}, else " in trait.help, env
            assert getattr(cls(), name) is None, env  # not set: the variable applies


def test_config_values_in_their_variables_syntax() -> None:
    assert configured(
        SandboxPool={"sizes": {"python3": 2, "sandbox-python": 0}, "max_age": 60.0},
        SandboxHosts={"allowed": ["gateway", ".svc.cluster.local"]},
        SandboxCulling={"connected": False, "idle_timeout": 0},
        SandboxSessions={"persistence": True},
        SandboxKernel={"memory": "1g"},
        SandboxLimits={"max_kernels": 5},
    ) == {
        "SANDBOX_POOL": "python3=2,sandbox-python=0",
        "SANDBOX_POOL_MAX_AGE": "60.0",
        "SANDBOX_ALLOWED_HOSTS": "gateway,.svc.cluster.local",
        "SANDBOX_CULL_CONNECTED": "false",
        "SANDBOX_CULL_IDLE_TIMEOUT": "0",
        "SANDBOX_SESSION_PERSISTENCE": "true",
        "SANDBOX_KERNEL_MEMORY": "1g",
        "SANDBOX_MAX_KERNELS": "5",
    }


def test_nothing_set_in_config_leaves_the_variables() -> None:
    assert configured() == {}
    # Empty is a value: it overrides the variable (no pool, no tenants file).
    assert configured(SandboxPool={"sizes": {}}, SandboxTenants={"file": ""}) == {
        "SANDBOX_POOL": "",
        "SANDBOX_TENANTS_FILE": "",
    }


def test_config_values_are_read_by_the_variables_parsers() -> None:
    env = configured(
        SandboxPool={"sizes": {"python3": 2}, "check_interval": 2.5},
        SandboxLimits={"max_kernels": 4, "max_launch_timeout": 30.0},
        SandboxMessages={"max_message_bytes": "1m"},
        SandboxHosts={"allowed": ["Gateway"]},
    )
    pool = PoolSettings.from_env(env)
    assert (pool.sizes, pool.check_interval) == ({"python3": 2}, 2.5)
    limits = LimitSettings.from_env(env)
    assert (limits.max_kernels, limits.max_launch_timeout) == (4, 30.0)
    assert MessageSettings.from_env(env).max_message_bytes == 1024**2
    assert "gateway" in allowed_hosts(env)
    # A bad value gets the variable's own message.
    with pytest.raises(ValueError, match=r"SANDBOX_POOL: expected kernelspec=size pairs"):
        PoolSettings.from_env(configured(SandboxPool={"sizes": {"python3": -1}}))


@pytest.mark.parametrize(
    ("section", "name", "value"),
    [
        ("SandboxLimits", "max_kernels", "many"),
        ("SandboxPool", "sizes", {"python3": "two"}),
        ("SandboxHosts", "allowed", ["gateway", 1]),
        ("SandboxCulling", "connected", "yes"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused(section: str, name: str, value: object) -> None:
    with pytest.raises(TraitError, match=name):
        configured(**{section: {name: value}})


def test_export_writes_the_config_values_to_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SANDBOX_MAX_KERNELS", "64")
    monkeypatch.setenv("SANDBOX_POOL", "python3=1")
    config = Config()
    config.SandboxLimits.max_kernels = 1
    assert settings.export(Configurable(config=config)) == {"SANDBOX_MAX_KERNELS": "1"}
    assert os.environ["SANDBOX_MAX_KERNELS"] == "1"
    assert os.environ["SANDBOX_POOL"] == "python3=1"  # not set in config: the variable stays


# --- Enterprise Gateway's own settings (sandbox_gateway.config) --------------------------------


class KernelManager(Configurable):
    pass


class SessionManager(Configurable):
    pass


class GatewayApp(Application):  # what sandbox_gateway.config reads of EnterpriseGatewayApp
    inherited_envs = TList(Unicode(), config=True)
    availability_mode = Unicode(None, allow_none=True, config=True)
    kernel_manager_class = KernelManager
    kernel_session_manager_class = SessionManager


def configured_gateway(config: Config) -> GatewayApp:
    app = GatewayApp(config=config)
    sandbox_config._configure_gateway(app, set(settings.env_names()))
    return app


def test_the_gateway_gets_the_sandbox_settings_unless_its_config_sets_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every SANDBOX_* variable of the gateway's environment is inherited: start from none (the
    # test run's own, e.g. SANDBOX_REQUIRE_DOCKER in CI, would be added).
    for name in [name for name in os.environ if name.startswith("SANDBOX_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SANDBOX_CULL_IDLE_TIMEOUT", "10")
    monkeypatch.setenv("SANDBOX_SESSION_PERSISTENCE", "true")
    monkeypatch.setenv("SANDBOX_SESSION_ROOT", "/sessions")
    config = Config()
    config.KernelManager.cull_interval = 5  # Enterprise Gateway's own setting wins
    config.GatewayApp.availability_mode = "replication"
    config.GatewayApp.inherited_envs = ["KERNEL_NAMESPACE", ""]
    app = configured_gateway(config)
    assert dict(app.config.KernelManager) == {
        "cull_idle_timeout": 10,
        "cull_interval": 5,
        "cull_connected": True,
    }
    assert dict(app.config.SessionManager) == {
        "enable_persistence": True,
        "persistence_root": "/sessions",
    }
    assert app.availability_mode == "replication"
    # Every setting reaches the launchers, with the names the config gives.
    assert set(app.inherited_envs) == {"KERNEL_NAMESPACE", *settings.env_names()}


def test_without_persistence_the_gateway_config_is_left_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SANDBOX_SESSION_PERSISTENCE", raising=False)
    app = configured_gateway(Config())
    assert "SessionManager" not in app.config
    assert app.availability_mode is None
