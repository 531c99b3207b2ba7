"""sandbox_gateway.http.ordering's rules: which kernelspecs hold an idle, and which message is
the idle that ends an execute request (the hold itself runs in the real gateway:
tests/e2e/docker/test_languages.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from sandbox_gateway.http.ordering import grace_of, is_execute_idle

pytestmark = pytest.mark.unit


def frames(
    msg_type: str, content: dict[str, Any], parent_type: str = "execute_request"
) -> list[bytes]:
    header = {"msg_type": msg_type, "msg_id": "m"}
    parent = {"msg_type": parent_type, "msg_id": "p"} if parent_type else {}
    return [b"sig", *(json.dumps(part).encode() for part in (header, parent, {}, content))]


@pytest.mark.parametrize(
    ("metadata", "grace"),
    [
        ({"sandbox": {"late_output_grace": 0.025}}, 0.025),
        ({"sandbox": {"late_output_grace": 1}}, 1.0),
        ({}, 0.0),
        ({"sandbox": {}}, 0.0),
        ({"sandbox": {"late_output_grace": -1}}, 0.0),
        ({"sandbox": {"late_output_grace": 5}}, 0.0),
        ({"sandbox": {"late_output_grace": "0.1"}}, 0.0),
        ({"sandbox": {"late_output_grace": True}}, 0.0),
        ({"sandbox": "x"}, 0.0),
    ],
)
def test_the_grace_comes_from_the_kernelspec_and_a_bad_one_is_none(
    metadata: dict[str, Any], grace: float
) -> None:
    assert grace_of(SimpleNamespace(metadata=metadata)) == grace
    assert grace_of(None) == 0.0


def test_only_the_idle_of_an_execute_request_is_held() -> None:
    assert is_execute_idle(frames("status", {"execution_state": "idle"}))
    assert not is_execute_idle(frames("status", {"execution_state": "busy"}))
    assert not is_execute_idle(frames("status", {"execution_state": "idle"}, "kernel_info_request"))
    assert not is_execute_idle(frames("status", {"execution_state": "idle"}, ""))
    assert not is_execute_idle(frames("execute_result", {"data": {"text/plain": "status"}}))
    assert not is_execute_idle([b"sig", b'{"msg_type": "status"', b"{}", b"{}", b"{}"])
    assert not is_execute_idle([b"sig"])
