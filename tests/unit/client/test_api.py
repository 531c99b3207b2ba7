"""The public surface: what users import and call, without a gateway."""

from __future__ import annotations

import inspect

import pytest

import jupyter_kernel_client as jkc
from jupyter_kernel_client import (
    AsyncGatewayKernelSession,
    GatewayKernelSession,
    KernelClientError,
    SessionStateError,
)


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and callable(member)
    }


def test_sync_and_async_faces_expose_the_same_public_methods() -> None:
    sync, async_ = public_methods(GatewayKernelSession), public_methods(AsyncGatewayKernelSession)
    assert sync.keys() == async_.keys()
    for name in sync:
        assert sync[name].parameters.keys() == async_[name].parameters.keys(), name
    for name, member in inspect.getmembers(AsyncGatewayKernelSession):
        if name in ("start", "shutdown", "close", "execute", "interrupt", "is_alive"):
            assert inspect.iscoroutinefunction(member), name
    assert hasattr(AsyncGatewayKernelSession, "__aenter__")
    assert hasattr(GatewayKernelSession, "__enter__")


def test_constructor_matches_the_documented_signature() -> None:
    params = list(inspect.signature(GatewayKernelSession).parameters.values())
    assert [(p.name, p.default) for p in params[:7]] == [
        ("gateway_http", inspect.Parameter.empty),
        ("gateway_ws", inspect.Parameter.empty),
        ("kernel_name", inspect.Parameter.empty),
        ("launch_env", None),
        ("startup_timeout", 30),
        ("max_retries", 3),
        ("retry_delay", 1.0),
    ]
    assert inspect.signature(GatewayKernelSession.execute).parameters["timeout"].default == 10


def test_every_exported_exception_has_one_root() -> None:
    errors = [getattr(jkc, n) for n in jkc.__all__ if n.endswith("Error")]
    assert len(errors) >= 10
    assert all(issubclass(e, KernelClientError) for e in errors)
    assert issubclass(jkc.ExecutionTimeoutError, TimeoutError)


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


def test_session_refuses_use_outside_its_lifecycle() -> None:
    session = GatewayKernelSession("http://127.0.0.1:9", "ws://127.0.0.1:9", "python3")
    with pytest.raises(SessionStateError, match="not started"):
        session.execute("1")
    session.shutdown()
    with pytest.raises(SessionStateError, match="closed"):
        session.execute("1")
    with pytest.raises(SessionStateError, match="closed"):
        session.start()
