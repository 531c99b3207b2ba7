"""A gateway protected by EG_AUTH_TOKEN: refused without the token, usable with it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from jupyter_kernel_client import (
    AsyncGatewayKernelSession,
    GatewayKernelSession,
    GatewayRefusedError,
)
from testkit.gateway import Gateway
from testkit.gateway import locked_gateway as locked

TOKEN = "gw-test-token-5f1d"


@pytest.fixture(scope="module")
def locked_gateway() -> Iterator[Gateway]:
    with locked(TOKEN) as gateway:
        yield gateway


def test_missing_or_wrong_token_is_refused_at_once(
    locked_gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JUPYTER_GATEWAY_AUTH_TOKEN", raising=False)
    for token in (None, "wrong"):
        session = GatewayKernelSession(
            locked_gateway.http, locked_gateway.ws, "python3", retry_delay=30, gateway_token=token
        )
        with pytest.raises(GatewayRefusedError) as info:
            session.start()
        assert info.value.status_code in (401, 403)


def test_token_opens_rest_and_websocket(locked_gateway: Gateway) -> None:
    with GatewayKernelSession(
        locked_gateway.http, locked_gateway.ws, "python3", gateway_token=TOKEN
    ) as session:
        assert str(session.execute("6 * 7")) == "42"


async def test_token_from_the_environment_for_the_async_face(
    locked_gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_GATEWAY_AUTH_TOKEN", TOKEN)
    async with AsyncGatewayKernelSession(
        locked_gateway.http, locked_gateway.ws, "python3"
    ) as session:
        assert str(await session.execute("6 * 7")) == "42"


@pytest.mark.parametrize(
    "presented", ["", TOKEN[:-1], TOKEN + "x", TOKEN[:-1] + "X", "é" * len(TOKEN)]
)
def test_the_single_token_is_checked_by_the_sandboxs_comparison(
    locked_gateway: Gateway, presented: str
) -> None:
    """A near miss (a prefix, one byte more or different, non-ASCII) is a 401 with the reason
    from the sandbox's constant-time check (Enterprise Gateway compared with ``!=`` and said
    nothing); the right token passes, in the header or as ``?token=``."""
    url = f"{locked_gateway.http}/api/kernelspecs"
    refused = requests.get(url, headers={"Authorization": f"token {presented}"}, timeout=10)
    assert refused.status_code == 401
    assert "a valid API token is required" in refused.json()["message"]
    assert requests.get(url, params={"token": TOKEN}, timeout=10).status_code == 200
    assert requests.get(url, headers={"Authorization": f"token {TOKEN}"}, timeout=10).ok
