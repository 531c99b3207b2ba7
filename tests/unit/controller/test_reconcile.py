"""Reconcile logic without kopf: decisions against an in-memory fake of the gateway client.

``FakeGateway`` is a fake (it keeps kernels in a dict); it stands in for
:class:`controller.gateway.GatewayClient` only where the logic under test is pure decision
making.  Talking to a real gateway is covered by ``tests/integration/controller``.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from controller import reconcile
from controller.gateway import Kernel
from controller.platform_env import RESERVED_ENV_NAMES, is_reserved, reserved_names
from controller.reconcile import (
    RESTARTS_ANNOTATION,
    collect_garbage,
    derive_kernel_id,
    is_controller_kernel_id,
)
from controller.settings import ControllerSettings
from jupyter_kernel_client import (
    EgressRefusedError,
    GatewayError,
    KernelLimitError,
    TransportError,
    UnknownKernelNameError,
)
from jupyter_kernel_client import protocol as proto

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
SETTINGS = ControllerSettings(gateway_url="http://gw:8889", max_restarts=2, retry_delay_seconds=7)


class FakeGateway:
    """An in-memory fake of the gateway client: kernels in a dict, failures on demand."""

    def __init__(self) -> None:
        self.kernels_by_id: dict[str, Kernel] = {}
        self.fail_with: Exception | None = None
        self.started: list[tuple[str, str, dict[str, str]]] = []
        self.shut_down: list[str] = []
        self.probes: list[bool] = []

    def add(self, kernel_id: str, *, state: str = "idle", last_activity: datetime = NOW) -> None:
        self.kernels_by_id[kernel_id] = Kernel(kernel_id, "python3", state, last_activity, 0)

    def _check(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with

    async def kernel(self, kernel_id: str) -> Kernel | None:
        self._check()
        return self.kernels_by_id.get(kernel_id)

    async def kernels(self) -> list[Kernel]:
        self._check()
        return list(self.kernels_by_id.values())

    async def ensure_kernel(
        self, kernel_id: str, kernel_name: str, env: dict[str, str], *, probe_first: bool = True
    ) -> tuple[Kernel, bool]:
        self._check()
        self.probes.append(probe_first)
        if kernel_id in self.kernels_by_id:
            return self.kernels_by_id[kernel_id], False
        if kernel_name != "python3":
            raise UnknownKernelNameError(kernel_name, ["python3"], status_code=500)
        self.started.append((kernel_id, kernel_name, env))
        self.add(kernel_id, state="starting")
        return self.kernels_by_id[kernel_id], True

    async def shutdown_kernel(self, kernel_id: str) -> None:
        self._check()
        self.shut_down.append(kernel_id)
        self.kernels_by_id.pop(kernel_id, None)


def meta(uid: str = "11111111-2222-4333-8444-555555555555", **extra: Any) -> dict[str, Any]:
    return {
        "name": "s",
        "namespace": "ns",
        "uid": uid,
        "generation": 3,
        "creationTimestamp": "2026-01-01T11:00:00Z",
        **extra,
    }


READY_STATUS: dict[str, Any] = {"phase": "Ready", "lastActivity": "2026-01-01T11:59:00Z"}


# --- identity -----------------------------------------------------------------------------


def test_kernel_id_is_a_stable_tagged_v4_uuid_that_enterprise_gateway_accepts() -> None:
    uid = str(uuid.uuid4())
    kernel_id = derive_kernel_id(uid)
    assert kernel_id == derive_kernel_id(uid)
    assert kernel_id != derive_kernel_id(str(uuid.uuid4()))
    # EG's own check: the text must survive a round trip as a version-4 UUID.
    assert str(uuid.UUID(kernel_id, version=4)) == kernel_id
    assert kernel_id.startswith("5a9d5e55-")
    assert is_controller_kernel_id(kernel_id)


@pytest.mark.parametrize(
    "kernel_id", [str(uuid.uuid4()), "not-a-uuid", "5a9d5e55-0000-1000-8000-000000000000", ""]
)
def test_foreign_kernel_ids_are_not_the_controllers(kernel_id: str) -> None:
    assert not is_controller_kernel_id(kernel_id)


def test_deriving_needs_a_uid() -> None:
    with pytest.raises(ValueError):
        derive_kernel_id("")


# --- ensure ---------------------------------------------------------------------------------


async def test_ensure_starts_the_kernel_with_the_derived_id_and_launch_env() -> None:
    gateway = FakeGateway()
    spec = {"env": {"KERNEL_X": "1"}, "resources": {"cpu": "500m", "memory": "1Gi"}}

    outcome = await reconcile.ensure_kernel(
        reconcile.Event(meta(), spec, {}, gateway, SETTINGS, NOW)
    )

    kernel_id = derive_kernel_id(meta()["uid"])
    assert gateway.started == [
        (
            kernel_id,
            "python3",
            {
                "KERNEL_X": "1",
                "KERNEL_SANDBOX_SESSION": "ns/s",
                "KERNEL_CPUS": "500m",
                "KERNEL_CPUS_LIMIT": "500m",
                "KERNEL_MEMORY": "1Gi",
                "KERNEL_MEMORY_LIMIT": "1Gi",
            },
        )
    ]
    assert outcome.action == "started"
    assert gateway.probes == [False]  # first attempt: start at once, look up only if refused
    assert outcome.retry_in is None and outcome.permanent_error is None
    status = outcome.status
    assert status["phase"] == "Ready"
    assert status["kernelId"] == kernel_id
    assert status["gatewayUrl"] == "http://gw:8889"
    assert status["websocketUrl"] == "ws://gw:8889"
    assert status["observedGeneration"] == 3
    assert status["conditions"][0]["status"] == "True"


async def test_a_kernel_is_started_for_the_tenant_of_the_sessions_namespace() -> None:
    settings = SETTINGS.model_copy(update={"namespace_tenants": {"ns": "team-a"}})
    gateway = FakeGateway()

    outcome = await reconcile.ensure_kernel(reconcile.Event(meta(), {}, {}, gateway, settings, NOW))

    assert outcome.status["phase"] == "Ready"
    assert gateway.started[0][2]["KERNEL_USERNAME"] == "team-a"
    # The protocol's KERNEL_USERNAME is the launch env's: the start names that tenant.
    config = settings.gateway_config().replace(launch_env=gateway.started[0][2])
    assert proto.start_kernel_body(config)["env"]["KERNEL_USERNAME"] == "team-a"


async def test_a_session_in_an_unmapped_namespace_fails_for_good_and_starts_nothing() -> None:
    settings = SETTINGS.model_copy(update={"namespace_tenants": {"elsewhere": "team-b"}})
    gateway = FakeGateway()

    outcome = await reconcile.ensure_kernel(reconcile.Event(meta(), {}, {}, gateway, settings, NOW))

    assert gateway.started == []
    assert outcome.status["phase"] == "Failed"
    assert outcome.permanent_error is not None
    assert "namespace 'ns' is mapped to no gateway tenant" in outcome.status["message"]


@pytest.mark.parametrize("tenant", ["", "two words", "x" * 65, "-lead"])
def test_bad_tenant_names_are_refused_at_start_up(tenant: str) -> None:
    with pytest.raises(ValueError, match="tenant"):
        ControllerSettings(namespace_tenants={"ns": tenant})


async def test_ensure_adopts_a_kernel_started_before_a_crash() -> None:
    gateway = FakeGateway()
    gateway.add(derive_kernel_id(meta()["uid"]))

    outcome = await reconcile.ensure_kernel(
        reconcile.Event(meta(), {}, {"phase": "Pending"}, gateway, SETTINGS, NOW)
    )

    assert gateway.started == []
    assert gateway.probes == [True]  # a retry or resume looks first
    assert outcome.action == "adopted"
    assert outcome.status["phase"] == "Ready"


async def test_ensure_leaves_finished_sessions_alone() -> None:
    gateway = FakeGateway()
    for phase in ("Failed", "Expired"):
        outcome = await reconcile.ensure_kernel(
            reconcile.Event(meta(), {}, {"phase": phase}, gateway, SETTINGS, NOW)
        )
        assert outcome.status == {} and outcome.action == "none"
    assert gateway.started == []


async def test_unknown_kernel_name_is_a_permanent_failure() -> None:
    outcome = await reconcile.ensure_kernel(
        reconcile.Event(meta(), {"kernelName": "nope"}, {}, FakeGateway(), SETTINGS, NOW)
    )
    assert outcome.permanent_error is not None and "nope" in outcome.permanent_error
    assert outcome.status["phase"] == "Failed"
    assert outcome.status["kernelId"] is None
    assert outcome.status["conditions"][0]["reason"] == "UnknownKernelName"


@pytest.mark.parametrize(
    "name",
    [
        "KERNEL_MEMORY",
        "KERNEL_MEMORY_LIMIT",
        "KERNEL_CPUS",
        "KERNEL_CPUS_LIMIT",
        "KERNEL_USERNAME",
        "KERNEL_POD_NAME",
        "KERNEL_LAUNCH_TIMEOUT",
        "KERNEL_IMAGE",
        "KERNEL_NAMESPACE",
        "KERNEL_ID",
        "KERNEL_UID",
        "KERNEL_SERVICE_ACCOUNT_NAME",
        "KERNEL_WORKING_DIR",
        "KERNEL_SANDBOX_SESSION",
        "KERNEL_EGRESS_ALLOW",
        "RESPONSE_ADDRESS",
    ],
)
async def test_a_reserved_env_name_fails_for_good_before_any_launch(name: str) -> None:
    gateway = FakeGateway()
    spec = {"env": {"DATASET": "x", name: "4Gi"}, "resources": {"memory": "512Mi"}}

    outcome = await reconcile.ensure_kernel(
        reconcile.Event(meta(), spec, {}, gateway, SETTINGS, NOW)
    )

    assert gateway.probes == [] and gateway.started == []
    assert outcome.permanent_error is not None
    assert outcome.permanent_error.startswith(f"spec.env sets {name}, which the platform controls")
    assert outcome.status["phase"] == "Failed"
    assert outcome.status["kernelId"] is None
    assert outcome.status["conditions"][0]["reason"] == "ReservedEnv"
    assert outcome.action == "failed"


def test_reserved_names_are_exact_names_and_the_size_prefixes() -> None:
    env = {
        "KERNEL_GREETING": "1",
        "KERNEL_IDX": "1",
        "DATASET": "x",
        "kernel_memory": "1",  # the platform reads upper-case names only
        "KERNEL_MEMORY_REQUEST": "1",
        "KERNEL_USERNAME": "root",
        "KERNEL_CPUS": "64",
    }
    assert reserved_names(env) == ["KERNEL_CPUS", "KERNEL_MEMORY_REQUEST", "KERNEL_USERNAME"]
    assert reserved_names({"KERNEL_X": "1", "MPLBACKEND": "Agg"}) == []


def test_every_variable_the_controller_sets_is_reserved() -> None:
    # What the controller itself puts into a launch (launch_env, then the gateway client's
    # KERNEL_ID and the protocol's KERNEL_USERNAME) is exactly what a spec must not override.
    spec = {"resources": {"cpu": "1", "memory": "1Gi"}, "egress": {"allow": ["pypi.org"]}}
    session = reconcile.session_of(meta(), spec, SETTINGS)
    config = SETTINGS.gateway_config().replace(launch_env=reconcile.launch_env(session, SETTINGS))
    body = proto.start_kernel_body(config)
    written = set(body["env"]) | {"KERNEL_ID"}
    assert written == {
        "KERNEL_SANDBOX_SESSION",
        "KERNEL_CPUS",
        "KERNEL_CPUS_LIMIT",
        "KERNEL_MEMORY",
        "KERNEL_MEMORY_LIMIT",
        "KERNEL_USERNAME",
        "KERNEL_ID",
        "KERNEL_EGRESS_ALLOW",
    }
    assert all(is_reserved(name) for name in written)
    assert len(set(RESERVED_ENV_NAMES)) == len(RESERVED_ENV_NAMES)


@pytest.mark.parametrize("error", [TransportError("refused"), GatewayError("HTTP 502")])
async def test_unreachable_gateway_is_temporary_and_says_so(error: Exception) -> None:
    gateway = FakeGateway()
    gateway.fail_with = error

    outcome = await reconcile.ensure_kernel(reconcile.Event(meta(), {}, {}, gateway, SETTINGS, NOW))

    assert outcome.retry_in == 7
    assert outcome.permanent_error is None
    assert outcome.status["phase"] == "Pending"
    assert outcome.status["conditions"][0]["reason"] == "GatewayUnavailable"
    assert str(error) in outcome.status["message"]


async def test_a_kernel_limit_keeps_the_session_pending_and_retries() -> None:
    gateway = FakeGateway()
    gateway.fail_with = KernelLimitError(
        "kernel limit reached: 3 of 3 kernels in use",
        status_code=403,
        scope="total",
        limit=3,
        in_use=3,
    )

    outcome = await reconcile.ensure_kernel(reconcile.Event(meta(), {}, {}, gateway, SETTINGS, NOW))

    assert outcome.permanent_error is None
    assert outcome.retry_in == 7
    assert outcome.status["phase"] == "Pending"
    assert outcome.status["conditions"][0]["reason"] == "KernelLimitReached"
    assert "kernel limit reached" in outcome.status["message"]


# --- check ------------------------------------------------------------------------------------


async def test_lost_kernel_is_restarted_within_the_budget() -> None:
    gateway = FakeGateway()
    outcome = await reconcile.check_kernel(
        reconcile.Event(
            meta(annotations={RESTARTS_ANNOTATION: "1"}), {}, READY_STATUS, gateway, SETTINGS, NOW
        )
    )
    assert outcome.action == "restarted"
    assert outcome.annotations == {RESTARTS_ANNOTATION: "2"}
    assert outcome.status["phase"] == "Ready"
    assert [s[0] for s in gateway.started] == [derive_kernel_id(meta()["uid"])]


async def test_dead_kernel_fails_the_session_when_the_budget_is_spent() -> None:
    gateway = FakeGateway()
    kernel_id = derive_kernel_id(meta()["uid"])
    gateway.add(kernel_id, state="dead")

    outcome = await reconcile.check_kernel(
        reconcile.Event(
            meta(annotations={RESTARTS_ANNOTATION: "2"}), {}, READY_STATUS, gateway, SETTINGS, NOW
        )
    )

    assert outcome.status["phase"] == "Failed"
    assert outcome.status["conditions"][0]["reason"] == "KernelDied"
    assert gateway.shut_down == [kernel_id]
    assert gateway.started == []


async def test_idle_kernel_expires_and_is_shut_down() -> None:
    gateway = FakeGateway()
    kernel_id = derive_kernel_id(meta()["uid"])
    gateway.add(kernel_id, last_activity=NOW - timedelta(seconds=61))

    outcome = await reconcile.check_kernel(
        reconcile.Event(meta(), {"idleTimeoutSeconds": 60}, READY_STATUS, gateway, SETTINGS, NOW)
    )

    assert outcome.status["phase"] == "Expired"
    assert outcome.status["conditions"][0]["reason"] == "IdleTimeout"
    assert outcome.status["kernelId"] is None
    assert gateway.shut_down == [kernel_id]


async def test_active_kernel_only_refreshes_last_activity() -> None:
    gateway = FakeGateway()
    gateway.add(derive_kernel_id(meta()["uid"]), last_activity=NOW - timedelta(seconds=5))

    outcome = await reconcile.check_kernel(
        reconcile.Event(meta(), {"idleTimeoutSeconds": 60}, READY_STATUS, gateway, SETTINGS, NOW)
    )

    assert outcome.status == {"lastActivity": "2026-01-01T11:59:55Z"}
    assert gateway.shut_down == []


async def test_lifetime_counts_from_creation() -> None:
    gateway = FakeGateway()
    gateway.add(derive_kernel_id(meta()["uid"]))
    spec = {"maxLifetimeSeconds": 3600}  # created exactly one hour before NOW

    outcome = await reconcile.check_kernel(
        reconcile.Event(meta(), spec, READY_STATUS, gateway, SETTINGS, NOW)
    )

    assert outcome.status["phase"] == "Expired"
    assert outcome.status["conditions"][0]["reason"] == "LifetimeExceeded"


async def test_default_idle_timeout_applies_when_the_spec_sets_none() -> None:
    gateway = FakeGateway()
    gateway.add(derive_kernel_id(meta()["uid"]), last_activity=NOW - timedelta(seconds=31))
    settings = SETTINGS.model_copy(update={"default_idle_timeout_seconds": 30})

    outcome = await reconcile.check_kernel(
        reconcile.Event(meta(), {}, READY_STATUS, gateway, settings, NOW)
    )

    assert outcome.status["phase"] == "Expired"


# --- conditions, spec changes, deletion -------------------------------------------------------


def test_ready_condition_keeps_its_transition_time_while_unchanged() -> None:
    before = [{"type": "Ready", "status": "True", "lastTransitionTime": "2025-12-31T00:00:00Z"}]
    same = reconcile.ready_condition(
        True, reason="R", message="m", generation=1, previous=before, now=NOW
    )
    flipped = reconcile.ready_condition(
        False, reason="R", message="m", generation=1, previous=before, now=NOW
    )
    assert same["lastTransitionTime"] == "2025-12-31T00:00:00Z"
    assert flipped["lastTransitionTime"] == "2026-01-01T12:00:00Z"


async def test_new_timeouts_do_not_relaunch_but_a_new_env_does() -> None:
    gateway = FakeGateway()
    kernel_id = derive_kernel_id(meta()["uid"])
    gateway.add(kernel_id)

    timeouts = await reconcile.apply_spec_change(
        reconcile.Event(meta(), {"idleTimeoutSeconds": 5}, READY_STATUS, gateway, SETTINGS, NOW), {}
    )
    assert gateway.shut_down == [] and gateway.started == []
    assert timeouts.status == {"observedGeneration": 3, "conditions": None}

    relaunched = await reconcile.apply_spec_change(
        reconcile.Event(meta(), {"env": {"KERNEL_A": "b"}}, READY_STATUS, gateway, SETTINGS, NOW),
        {},
    )
    assert gateway.shut_down == [kernel_id]
    assert gateway.started[0][2]["KERNEL_A"] == "b"
    assert relaunched.status["phase"] == "Ready"


async def test_the_session_s_egress_list_is_its_launch_s_and_an_edit_relaunches() -> None:
    gateway = FakeGateway()
    spec = {"egress": {"allow": ["pypi.org", "*.pythonhosted.org"]}}
    started = await reconcile.ensure_kernel(
        reconcile.Event(meta(), spec, {}, gateway, SETTINGS, NOW)
    )
    assert started.status["phase"] == "Ready"
    assert gateway.started[0][2]["KERNEL_EGRESS_ALLOW"] == "pypi.org,*.pythonhosted.org"
    # No list, no variable: the gateway grants such a kernel nothing.
    await reconcile.ensure_kernel(
        reconcile.Event(meta(uid=str(uuid.uuid4())), {}, {}, gateway, SETTINGS, NOW)
    )
    assert "KERNEL_EGRESS_ALLOW" not in gateway.started[1][2]
    # A running kernel keeps the grants it started with: a new list means a new launch.
    kernel_id = derive_kernel_id(meta()["uid"])
    edited = {"egress": {"allow": ["pypi.org"]}}
    relaunched = await reconcile.apply_spec_change(
        reconcile.Event(meta(), edited, READY_STATUS, gateway, SETTINGS, NOW), spec
    )
    assert gateway.shut_down == [kernel_id]
    assert gateway.started[2][2]["KERNEL_EGRESS_ALLOW"] == "pypi.org"
    assert relaunched.status["phase"] == "Ready"
    unchanged = await reconcile.apply_spec_change(
        reconcile.Event(meta(), edited, READY_STATUS, gateway, SETTINGS, NOW), edited
    )
    assert gateway.shut_down == [kernel_id] and unchanged.action == "none"


async def test_a_list_beyond_the_gateway_s_ceiling_fails_the_session_for_good() -> None:
    gateway = FakeGateway()
    gateway.fail_with = EgressRefusedError(
        "egress to example.com is beyond the ceiling pypi.org",
        status_code=403,
        requested="example.com",
        ceiling="pypi.org",
    )
    spec = {"egress": {"allow": ["example.com"]}}
    outcome = await reconcile.ensure_kernel(
        reconcile.Event(meta(), spec, {}, gateway, SETTINGS, NOW)
    )
    assert outcome.status["phase"] == "Failed" and outcome.action == "failed"
    assert outcome.status["conditions"][0]["reason"] == "EgressRefused"
    assert outcome.permanent_error is not None and "example.com" in outcome.permanent_error
    assert outcome.retry_in is None and outcome.status["kernelId"] is None


async def test_an_edit_to_a_reserved_env_name_replaces_the_kernel_with_a_failure() -> None:
    gateway = FakeGateway()
    kernel_id = derive_kernel_id(meta()["uid"])
    gateway.add(kernel_id)
    old = {"env": {"KERNEL_A": "b"}}
    new = {"env": {"KERNEL_A": "b", "KERNEL_MEMORY_LIMIT": "64Gi"}}

    outcome = await reconcile.apply_spec_change(
        reconcile.Event(meta(), new, READY_STATUS, gateway, SETTINGS, NOW), old
    )

    # A Failed session owns no kernel: the old one goes, no new one starts.
    assert gateway.shut_down == [kernel_id] and gateway.started == []
    assert outcome.status["phase"] == "Failed"
    assert outcome.status["conditions"][0]["reason"] == "ReservedEnv"
    assert outcome.permanent_error is not None and "KERNEL_MEMORY_LIMIT" in outcome.permanent_error


async def test_release_shuts_down_or_retries_while_terminating() -> None:
    gateway = FakeGateway()
    kernel_id = derive_kernel_id(meta()["uid"])
    gateway.add(kernel_id)
    assert (
        await reconcile.release_kernel(reconcile.Event(meta(), {}, {}, gateway, SETTINGS, NOW))
    ).action == "released"
    assert gateway.shut_down == [kernel_id]

    gateway.fail_with = TransportError("refused")
    outcome = await reconcile.release_kernel(
        reconcile.Event(meta(), {}, READY_STATUS, gateway, SETTINGS, NOW)
    )
    assert outcome.retry_in == 7
    assert outcome.status["phase"] == "Terminating"


async def test_a_failed_check_leaves_a_ready_session_ready_but_unknown() -> None:
    gateway = FakeGateway()
    gateway.fail_with = TransportError("refused")
    outcome = await reconcile.check_kernel(
        reconcile.Event(meta(), {}, READY_STATUS, gateway, SETTINGS, NOW)
    )
    assert outcome.retry_in == 7
    assert outcome.status["phase"] == "Ready"
    assert outcome.status["kernelId"] == derive_kernel_id(meta()["uid"])
    assert outcome.status["conditions"][0]["status"] == "Unknown"


# --- garbage collection -------------------------------------------------------------------


async def test_garbage_collection_needs_two_passes_and_spares_foreign_and_owned_kernels() -> None:
    gateway = FakeGateway()
    owned, orphan, foreign = derive_kernel_id("a"), derive_kernel_id("b"), str(uuid.uuid4())
    for kernel_id in (owned, orphan, foreign):
        gateway.add(kernel_id)

    first = await collect_garbage(gateway, [owned], frozenset())
    assert first.collected == [] and first.suspects == {orphan}
    assert gateway.shut_down == []

    second = await collect_garbage(gateway, [owned], first.suspects)
    assert second.collected == [orphan]
    assert gateway.shut_down == [orphan]
    assert set(gateway.kernels_by_id) == {owned, foreign}


async def test_a_suspect_that_gained_a_session_is_spared() -> None:
    gateway = FakeGateway()
    kernel_id = derive_kernel_id("late")
    gateway.add(kernel_id)
    report = await collect_garbage(gateway, [kernel_id], frozenset({kernel_id}))
    assert report.collected == [] and report.suspects == frozenset()


# --- settings ------------------------------------------------------------------------------


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_GATEWAY_URL", "http://gateway.svc:8888/")
    monkeypatch.setenv("SANDBOX_PUBLIC_GATEWAY_URL", "https://sandbox.example.org/gateway")
    monkeypatch.setenv("SANDBOX_MAX_RESTARTS", "0")
    settings = ControllerSettings()
    assert settings.gateway_url == "http://gateway.svc:8888"
    assert settings.gateway_ws_url == "ws://gateway.svc:8888"
    assert settings.public_websocket_url == "wss://sandbox.example.org/gateway"
    assert settings.max_restarts == 0


def test_the_controller_talks_to_the_gateway_with_the_client_config() -> None:
    settings = ControllerSettings(
        gateway_url="http://gateway.svc:8888",
        gateway_auth_token="s3cret",
        request_timeout_seconds=12,
        default_kernel_name="sandbox-python",
    )
    config = settings.gateway_config()
    assert (config.gateway_http, config.gateway_ws) == (
        "http://gateway.svc:8888",
        settings.gateway_ws_url,
    )
    assert config.headers == {"Authorization": "token s3cret"}
    assert (config.request_timeout, config.startup_timeout) == (12, 12)
    assert config.kernel_name == "sandbox-python"
    assert config.max_retries == 0  # kopf retries the handler


def test_settings_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        ControllerSettings(gateway_url="gateway:8888")
    with pytest.raises(ValueError):
        ControllerSettings(check_interval_seconds=0)


def test_every_setting_is_documented() -> None:
    for name, info in ControllerSettings.model_fields.items():
        assert info.description and info.description.startswith(f"SANDBOX_{name.upper()}:"), name


def test_the_controllers_default_kernel_name_applies_when_the_spec_names_none() -> None:
    # The CRD has no default of its own, so SANDBOX_DEFAULT_KERNEL_NAME really takes effect.
    settings = ControllerSettings(
        gateway_url="http://gw:8889", default_kernel_name="sandbox-python"
    )
    assert reconcile.session_of(meta(), {}, settings).kernel_name == "sandbox-python"
    named = reconcile.session_of(meta(), {"kernelName": "python3"}, settings)
    assert named.kernel_name == "python3"
