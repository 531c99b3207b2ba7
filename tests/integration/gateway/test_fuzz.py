"""No 5xx and no traceback for a client's mistake, on any route of the gateway (a real EG 3.3).

Hypothesis generates ids, bodies and env values; every answer must be below 500 and carry no
Python traceback.  A body that happens to be a valid start request starts a kernel, which is shut
down at once.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testkit.gateway import Gateway

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
env_names = st.sampled_from(
    [
        "KERNEL_ID",
        "KERNEL_LAUNCH_TIMEOUT",
        "KERNEL_USERNAME",
        "KERNEL_WORKING_DIR",
        "KERNEL_IMAGE",
        "KERNEL_CPUS",
        "KERNEL_MEMORY",
        "EG_IMPERSONATION_ENABLED",
        "PATH",
    ]
) | st.text(max_size=12)
env_values = (
    st.sampled_from(
        ["", "nan", "inf", "-inf", "-1", "0", "1e309", "abc", "../../etc", "x" * 5000, "\x00", "é"]
    )
    | json_values
)
ids = st.sampled_from(
    ["", "x", "0" * 36, "00000000-0000-0000-0000-000000000000", "..", "%2e%2e", "%00", "a" * 300]
) | st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


def check(response: requests.Response) -> None:
    assert response.status_code < 500, (
        response.request.method,
        response.request.url,
        response.text,
    )
    assert "Traceback" not in response.text
    assert 'File "' not in response.text


def cleanup(gateway: Gateway, response: requests.Response) -> None:
    if response.status_code == 201:
        kernel_id = response.json()["id"]
        requests.delete(f"{gateway.http}/api/kernels/{kernel_id}", timeout=30)


@FUZZ
@given(body=json_values, raw=st.booleans())
def test_start_request_bodies(gateway: Gateway, body: Any, raw: bool) -> None:
    data = json.dumps(body) if not raw else str(body)[:200]
    response = requests.post(f"{gateway.http}/api/kernels", data=data, timeout=60)
    check(response)
    cleanup(gateway, response)


@FUZZ
@given(
    env=st.dictionaries(env_names, env_values, max_size=4),
    name=st.sampled_from(["python3", "nope", ""]),
)
def test_start_request_env(gateway: Gateway, env: dict[str, Any], name: str) -> None:
    # json.dumps, not requests' json=: NaN and infinities must reach the gateway (as the
    # non-standard tokens Python writes), not fail in the client.
    body = json.dumps({"name": name, "env": env})
    response = requests.post(f"{gateway.http}/api/kernels", data=body, timeout=60)
    check(response)
    cleanup(gateway, response)


@FUZZ
@given(
    kernel_id=ids,
    action=st.sampled_from(["", "/restart", "/interrupt", "/channels", "/nothing"]),
    method=st.sampled_from(["GET", "POST", "DELETE", "PATCH", "PUT"]),
    body=json_values,
)
def test_kernel_routes_with_bad_ids(
    gateway: Gateway, kernel_id: str, action: str, method: str, body: Any
) -> None:
    url = f"{gateway.http}/api/kernels/{requests.utils.quote(kernel_id, safe='')}{action}"
    check(requests.request(method, url, data=json.dumps(body), timeout=30))


@FUZZ
@given(name=ids, method=st.sampled_from(["GET", "POST", "DELETE"]))
def test_kernelspec_and_other_routes(gateway: Gateway, name: str, method: str) -> None:
    quoted = requests.utils.quote(name, safe="")
    for path in (
        f"/api/kernelspecs/{quoted}",
        f"/kernelspecs/{quoted}/logo-64x64.png",
        f"/{quoted}",
    ):
        check(requests.request(method, gateway.http + path, timeout=30))


@pytest.mark.parametrize("action", ["restart", "interrupt"])
def test_unknown_kernel_actions_are_404(gateway: Gateway, action: str) -> None:
    url = f"{gateway.http}/api/kernels/00000000-0000-4000-8000-000000000000/{action}"
    response = requests.post(url, timeout=30)
    assert response.status_code == 404
    check(response)


def test_no_kernel_was_left_behind(gateway: Gateway) -> None:
    # Runs last in this module: every fuzzed start that succeeded was shut down.
    assert gateway.kernels() == []
