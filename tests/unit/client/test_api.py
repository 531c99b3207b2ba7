"""The public surface: what users import and call, without a gateway."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import jupyter_kernel_client as jkc
from jupyter_kernel_client import (
    AsyncGatewayKernelSession,
    AsyncKernelSessionPool,
    AuthenticatedKernelSession,
    ConnectionLostError,
    ExecutionResult,
    FileServerConfig,
    GatewayConfig,
    GatewayKernelSession,
    KernelClientError,
    KernelMetrics,
    KernelSessionPool,
    OutputEvent,
    PoolState,
    PrometheusGatewayKernelSession,
    SessionStateError,
    TransportError,
)

HTTP, WS = "http://127.0.0.1:9", "ws://127.0.0.1:9"  # nothing listens: nothing may connect
FILES = FileServerConfig("http://127.0.0.1:9", "file-token", shared_dir="/srv/shared")


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and callable(member) and not isinstance(member, type)
    }


@pytest.mark.parametrize(
    ("sync", "async_"),
    [
        (GatewayKernelSession, AsyncGatewayKernelSession),
        (KernelSessionPool, AsyncKernelSessionPool),
    ],
)
def test_sync_and_async_faces_expose_the_same_public_methods(sync: type, async_: type) -> None:
    sync_methods, async_methods = public_methods(sync), public_methods(async_)
    assert sync_methods.keys() == async_methods.keys()
    for name in sync_methods:
        assert sync_methods[name].parameters.keys() == async_methods[name].parameters.keys(), name
    for name, member in inspect.getmembers(async_):
        if name in public_methods(async_) and name != "session":
            assert inspect.iscoroutinefunction(member), name
    assert hasattr(async_, "__aenter__") and hasattr(sync, "__enter__")
    assert public_methods(sync).keys() >= {"start", "close"}


def test_both_faces_have_file_operations_and_metrics() -> None:
    for cls in (GatewayKernelSession, AsyncGatewayKernelSession):
        methods = public_methods(cls)
        assert {"execute_file_op", "upload_to_kernel", "download_from_kernel"} <= methods.keys()
        assert "files" in inspect.signature(cls).parameters
        assert "metrics" in inspect.signature(cls).parameters


def test_constructor_keeps_the_documented_signature() -> None:
    params = list(inspect.signature(GatewayKernelSession).parameters.values())
    assert [p.name for p in params[:7]] == [
        "gateway_http",
        "gateway_ws",
        "kernel_name",
        "launch_env",
        "startup_timeout",
        "max_retries",
        "retry_delay",
    ]
    assert params[0].default is inspect.Parameter.empty
    assert [p.default for p in params[3:7]] == [None, 30, 3, 1.0]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[7:])
    assert inspect.signature(GatewayKernelSession.execute).parameters["timeout"].default == 10


def test_seed_calls_build_one_config() -> None:
    env = {"KERNEL_PROJECT": "p"}
    session = GatewayKernelSession(HTTP, WS, "python3", env, 12, 5, 0.5)
    assert session.config == GatewayConfig(
        HTTP, WS, "python3", env, startup_timeout=12, max_retries=5, retry_delay=0.5
    )
    assert (session.gateway_http, session.gateway_ws, session.kernel_name) == (
        HTTP,
        WS,
        "python3",
    )
    async_session = AsyncGatewayKernelSession(HTTP, WS, "python3", env, 12, 5, 0.5)
    assert async_session.config == session.config


def test_config_is_validated_once_and_immutable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_GATEWAY_AUTH_TOKEN", "from-env")
    env = {"KERNEL_X": "1"}
    config = GatewayConfig("https://gw.example/", launch_env=env)
    assert config.gateway_http == "https://gw.example"
    assert config.gateway_ws == "wss://gw.example"  # derived
    assert config.kernel_name == "python3"
    assert config.token == "from-env" and "from-env" not in repr(config)
    assert config.headers == {"Authorization": "token from-env"}
    assert config.max_output_bytes == 64 * 1024 * 1024
    assert config.message_limit == config.max_output_bytes + 1024 * 1024
    env["KERNEL_X"] = "changed"  # the config took a copy
    assert config.launch_env == {"KERNEL_X": "1"}
    with pytest.raises(TypeError):
        config.launch_env["KERNEL_Y"] = "2"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.kernel_name = "other"  # type: ignore[misc]
    moved = config.replace(gateway_http="http://other:8889", max_output_bytes=1024 * 1024)
    assert moved.gateway_ws == "ws://other:8889"
    assert moved.message_limit == 2 * 1024 * 1024
    assert hash(moved) != hash(config)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"gateway_http": "localhost:8889"}, ValueError, "gateway_http"),
        ({"gateway_http": HTTP, "gateway_ws": "http://x"}, ValueError, "gateway_ws"),
        ({"gateway_http": HTTP, "kernel_name": " "}, ValueError, "kernel_name"),
        ({"gateway_http": HTTP, "startup_timeout": 0}, ValueError, "startup_timeout"),
        ({"gateway_http": HTTP, "max_retries": -1}, ValueError, "max_retries"),
        ({"gateway_http": HTTP, "max_output_bytes": -1}, ValueError, "max_output_bytes"),
        ({"gateway_http": HTTP, "max_message_bytes": 10}, ValueError, "max_message_bytes"),
        ({"gateway_http": HTTP, "launch_env": {"KERNEL_X": 1}}, TypeError, "KERNEL_X"),
    ],
)
def test_bad_configuration_is_refused_clearly(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        GatewayConfig(**kwargs)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("localhost:8889", "ws://x", "python3"), "gateway_http"),
        (("http://x", "http://x", "python3"), "gateway_ws"),
        (("http://x", "ws://x", ""), "kernel_name"),
    ],
)
def test_bad_arguments_are_refused_clearly(args: tuple[str, str, str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GatewayKernelSession(*args)


def test_a_config_and_connection_arguments_do_not_mix() -> None:
    config = GatewayConfig(HTTP, WS)
    with pytest.raises(TypeError, match="not both"):
        GatewayKernelSession(config, WS)
    with pytest.raises(TypeError, match="not both"):
        AsyncGatewayKernelSession(config, startup_timeout=5)
    with pytest.raises(TypeError, match="not both"):
        KernelSessionPool(config, launch_env={"A": "b"})
    with pytest.raises(TypeError, match="not both"):
        KernelSessionPool(HTTP, factory=lambda: GatewayKernelSession(config))


def test_features_compose_on_both_faces() -> None:
    config = GatewayConfig(HTTP, WS, max_output_bytes=1024 * 1024)
    metrics = KernelMetrics.for_registry(CollectorRegistry())
    for face in (GatewayKernelSession, AsyncGatewayKernelSession):
        session = face(config, files=FILES, metrics=metrics)
        assert session.config is config
        assert session.files is FILES and session.metrics is metrics
    with pytest.raises(TypeError, match="FileServerConfig"):
        GatewayKernelSession(config, files="http://files")  # type: ignore[arg-type]


def test_seed_feature_names_are_thin_compositions() -> None:
    registry = CollectorRegistry()
    prometheus = PrometheusGatewayKernelSession(HTTP, WS, "python3", registry=registry)
    assert type(prometheus).__mro__[1] is GatewayKernelSession
    assert prometheus.metrics is KernelMetrics.for_registry(registry)
    authenticated = AuthenticatedKernelSession(
        HTTP, WS, "python3", file_server_url="http://files:8080/", auth_token="t", shared_dir="/s"
    )
    assert authenticated.files == FileServerConfig("http://files:8080", "t", "/s")
    both = AuthenticatedKernelSession(
        HTTP,
        WS,
        "python3",
        file_server_url="http://files:8080",
        auth_token="t",
        metrics=prometheus.metrics,
    )
    assert both.metrics is prometheus.metrics and both.files is not None


def test_file_operations_need_a_file_server() -> None:
    session = GatewayKernelSession(HTTP, WS, "python3")
    with pytest.raises(SessionStateError, match="files="):
        session.upload_to_kernel(__file__)
    with pytest.raises(ValueError, match="token"):
        FileServerConfig("http://files", "")
    with pytest.raises(ValueError, match="absolute"):
        FileServerConfig("http://files", "t", shared_dir="data")


def test_pools_validate_without_starting_anything() -> None:
    for pool_class in (KernelSessionPool, AsyncKernelSessionPool):
        pool = pool_class(HTTP, WS, size=1, max_size=3, health_check_interval=None)
        assert pool.state is PoolState.NEW
        assert pool.stats == {"idle": 0, "in_use": 0, "total": 0, "shutting_down": 0}
        # A kernel serves one acquire unless the caller opts into handing it out again.
        assert inspect.signature(pool_class).parameters["reuse"].default is False
        assert pool.reuse is False
        assert pool_class(HTTP, WS, reuse=True).reuse is True
        with pytest.raises(ValueError, match="max_size"):
            pool_class(GatewayConfig(HTTP), size=3, max_size=2)
        with pytest.raises(ValueError, match="gateway_http"):
            pool_class("localhost:8889", WS)
        with pytest.raises(TypeError, match="needs"):
            pool_class()


def test_pool_takes_a_session_factory() -> None:
    made: list[GatewayKernelSession] = []

    def factory() -> GatewayKernelSession:
        made.append(GatewayKernelSession(GatewayConfig(HTTP)))
        return made[-1]

    pool = KernelSessionPool(factory=factory, size=0, max_size=1)
    assert made == []  # nothing built before it is needed
    with pytest.raises(SessionStateError, match="new"):
        pool.acquire()


def test_session_refuses_use_outside_its_lifecycle() -> None:
    session = GatewayKernelSession(HTTP, WS, "python3")
    with pytest.raises(SessionStateError, match="not started"):
        session.execute("1")
    session.shutdown()
    for call in (lambda: session.execute("1"), session.start):
        with pytest.raises(SessionStateError, match="closed"):
            call()
    assert session.is_alive() is False


def test_every_exported_exception_has_one_root() -> None:
    errors = [getattr(jkc, n) for n in jkc.__all__ if n.endswith("Error")]
    assert len(errors) >= 10
    assert all(issubclass(e, KernelClientError) for e in errors)
    assert issubclass(jkc.ExecutionTimeoutError, TimeoutError)
    assert issubclass(ConnectionLostError, TransportError)


def test_a_truncated_result_says_so() -> None:
    result = ExecutionResult("ok", [OutputEvent("stdout", text="x" * 10)], 1, 0.1, truncated=True)
    assert str(result).startswith("x" * 10 + "\n[output truncated")
    assert str(ExecutionResult("ok", [OutputEvent("stdout", text="4")], 1, 0.1)) == "4"


def test_the_protocol_module_is_public() -> None:
    from jupyter_kernel_client import protocol

    assert set(protocol.__all__) >= {"run_flow", "run_flow_async", "start_flow", "shutdown_flow"}
    assert all(hasattr(protocol, name) for name in protocol.__all__)
    assert jkc.protocol is protocol


# --- egress -----------------------------------------------------------------------------------


def test_egress_allow_is_sent_as_kernel_egress_allow() -> None:
    config = GatewayConfig("http://gw:8888", egress_allow=["pypi.org", " *.pythonhosted.org "])
    assert config.egress_allow == ("pypi.org", "*.pythonhosted.org")
    assert config.launch_env["KERNEL_EGRESS_ALLOW"] == "pypi.org,*.pythonhosted.org"
    assert "KERNEL_EGRESS_ALLOW" not in GatewayConfig("http://gw:8888").launch_env
    changed = config.replace(egress_allow=["api.example.org"])
    assert changed.launch_env["KERNEL_EGRESS_ALLOW"] == "api.example.org"
    assert "KERNEL_EGRESS_ALLOW" not in config.replace(egress_allow=[]).launch_env


@pytest.mark.parametrize(
    "value, error",
    [
        ("pypi.org", TypeError),
        (["pypi.org,evil.example"], ValueError),
        ([""], ValueError),
        ([3], ValueError),
    ],
)
def test_a_wrong_egress_allow_is_refused(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        GatewayConfig("http://gw:8888", egress_allow=value)


def test_egress_allow_and_launch_env_must_agree() -> None:
    with pytest.raises(ValueError, match="disagree"):
        GatewayConfig(
            "http://gw:8888", egress_allow=["pypi.org"], launch_env={"KERNEL_EGRESS_ALLOW": "x.org"}
        )
