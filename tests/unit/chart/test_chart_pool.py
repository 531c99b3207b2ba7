"""The gateway's warm pool (SANDBOX_POOL*) and its optional ServiceMonitor, as rendered."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import helm_python
import pytest
from chart_testlib import CI_DIR, find, load_values, one, render, render_docs

pytestmark = pytest.mark.unit

POOL_SCENARIO = CI_DIR / "pool-values.yaml"
GATEWAY_MONITOR_SCENARIO = CI_DIR / "gateway-servicemonitor-values.yaml"


def _gateway_env(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    container = one(docs, "Deployment", "-gateway")["spec"]["template"]["spec"]["containers"][0]
    env: list[dict[str, Any]] = container["env"]
    return env


def _pool_env(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [e for e in _gateway_env(render_docs(values)) if e["name"].startswith("SANDBOX_POOL")]


# --- environment -----------------------------------------------------------------------------


def test_pool_of_two_kernelspecs_renders_sorted_name_size_pairs() -> None:
    # The scenario lists sandbox-python before python3: the variable is sorted regardless.
    assert _pool_env(load_values(POOL_SCENARIO)) == [
        {"name": "SANDBOX_POOL", "value": "python3=2,sandbox-python=1"},
        {"name": "SANDBOX_POOL_MAX_AGE", "value": "1800"},
        {"name": "SANDBOX_POOL_CHECK_INTERVAL", "value": "15"},
    ]


def test_no_pool_by_default_and_the_gateway_defaults_for_the_timings() -> None:
    assert _pool_env() == [
        {"name": "SANDBOX_POOL_MAX_AGE", "value": "3600"},
        {"name": "SANDBOX_POOL_CHECK_INTERVAL", "value": "10"},
    ]
    assert _pool_env({"gateway": {"pool": {}}}) == _pool_env()


def test_pool_may_fill_the_kernel_limit_exactly_and_hold_zero_sizes() -> None:
    env = _pool_env({"gateway": {"maxKernels": 3, "pool": {"python3": 3, "sandbox-python": 0}}})
    assert env[0] == {"name": "SANDBOX_POOL", "value": "python3=3,sandbox-python=0"}


def test_pool_follows_the_chart_kernelspecs() -> None:
    specs = [python_spec("py.3_11", "Python 3.11")]
    values = {
        "kernels": {"specs": specs, "defaultKernelName": "py.3_11"},
        "gateway": {"pool": {"py.3_11": 4}},
    }
    assert _pool_env(values)[0] == {"name": "SANDBOX_POOL", "value": "py.3_11=4"}


def python_spec(name: str, display_name: str) -> dict[str, Any]:
    """A kernels.specs entry for a Python kernelspec of kernels.image."""
    return {
        "name": name,
        "displayName": display_name,
        "language": "python",
        "interruptMode": "",
        "lateOutputGrace": 0,
        "image": {"repository": "", "tag": ""},
    }


# --- schema ----------------------------------------------------------------------------------

# Each bad value, and the schema location Helm must name in its refusal (so that a refusal for
# some other reason does not pass the test).
BAD_POOL_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "negative size": ({"pool": {"python3": -1}}, "/gateway/pool/python3"),
    "fractional size": ({"pool": {"python3": 1.5}}, "/gateway/pool/python3"),
    "size as a string": ({"pool": {"python3": "2"}}, "/gateway/pool/python3"),
    "name with a space": ({"pool": {"Python 3": 1}}, "/gateway/pool"),
    "name starting with a dash": ({"pool": {"-python3": 1}}, "/gateway/pool"),
    "name of 65 characters": ({"pool": {"p" * 65: 1}}, "/gateway/pool"),
    "pool as a list": ({"pool": ["python3=2"]}, "/gateway/pool"),
    "unknown extra key": ({"poolSize": 2}, "/gateway"),
    "zero max age": ({"poolMaxAgeSeconds": 0}, "/gateway/poolMaxAgeSeconds"),
    "fractional max age": ({"poolMaxAgeSeconds": 0.5}, "/gateway/poolMaxAgeSeconds"),
    "zero check interval": ({"poolCheckIntervalSeconds": 0}, "/gateway/poolCheckIntervalSeconds"),
    "unknown key in the gateway monitor": (
        {"serviceMonitor": {"enabled": True, "interval": "5s"}},
        "/gateway/serviceMonitor",
    ),
}


@pytest.mark.parametrize(
    ("gateway", "location"), BAD_POOL_VALUES.values(), ids=BAD_POOL_VALUES.keys()
)
def test_schema_refuses_bad_pool_values(gateway: dict[str, Any], location: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=f"at '{re.escape(location)}'"):
        render({"gateway": gateway})


def test_pool_accepts_the_longest_kernelspec_name() -> None:
    # kernels.specs caps names at 63 characters, under the gateway's 64.
    name = "p" * 63
    values = {
        "kernels": {"specs": [python_spec(name, "long")], "defaultKernelName": name},
        "gateway": {"pool": {name: 1}},
    }
    assert _pool_env(values)[0] == {"name": "SANDBOX_POOL", "value": f"{name}=1"}


# --- refusals at render time -----------------------------------------------------------------


def test_pool_larger_than_the_kernel_limit_is_refused() -> None:
    too_many = {"gateway": {"maxKernels": 4, "pool": {"python3": 3, "sandbox-python": 2}}}
    message = r"gateway\.pool holds 5 kernels in all, more than gateway\.maxKernels \(4\)"
    with pytest.raises(helm_python.HelmRenderError, match=message):
        render(too_many)


def test_pool_for_an_unknown_kernelspec_is_refused() -> None:
    message = (
        r'gateway\.pool: kernelspec "r-kernel" is not one of kernels\.specs '
        r"\(python3, sandbox-python, bash, javascript, r\)"
    )
    with pytest.raises(helm_python.HelmRenderError, match=message):
        render({"gateway": {"pool": {"python3": 1, "r-kernel": 1}}})


# --- the gateway's ServiceMonitor ------------------------------------------------------------


def test_gateway_monitor_scrapes_the_metrics_port_with_the_gateway_token() -> None:
    docs = render_docs(load_values(GATEWAY_MONITOR_SCENARIO))
    monitor = one(docs, "ServiceMonitor", "-gateway")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = one(docs, "Service", "-gateway")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["sandbox"]}
    assert [p["name"] for p in service["spec"]["ports"]] == ["http", "metrics"]
    # "token", not Bearer: the gateway accepts "Authorization: token <token>" only; the token
    # is the "prometheus" tenant's, the one that may read /metrics.
    token_ref = {"name": "demo-mini-jupyter-sandbox-gateway-token", "key": "prometheus"}
    assert monitor["spec"]["endpoints"] == [
        {
            "port": "metrics",
            "path": "/metrics",
            "interval": "15s",
            "authorization": {"type": "token", "credentials": token_ref},
        }
    ]
    secret = one(docs, "Secret", "-gateway-token")
    tenants = json.loads(base64.b64decode(secret["data"]["tenants.json"]))["tenants"]
    assert tenants["prometheus"]["metrics"] is True
    assert tenants["prometheus"]["token"] == base64.b64decode(secret["data"]["prometheus"]).decode()
    values = {e["name"]: e.get("value") for e in _gateway_env(docs)}
    assert values["SANDBOX_METRICS_PORT"] == "9464"
    assert values["SANDBOX_MAX_MESSAGE_BYTES"] == "16m"
    ports = one(docs, "Deployment", "-gateway")["spec"]["template"]["spec"]["containers"][0][
        "ports"
    ]
    assert {"name": "metrics", "containerPort": 9464, "protocol": "TCP"} in ports
    # Only the gateway's: the controller's ServiceMonitor keeps its own switch.
    assert [m["metadata"]["name"] for m in find(docs, "ServiceMonitor")] == [
        "demo-mini-jupyter-sandbox-gateway"
    ]


def test_gateway_monitor_lets_prometheus_reach_the_metrics_port_only() -> None:
    docs = render_docs(load_values(GATEWAY_MONITOR_SCENARIO))
    policy = one(docs, "NetworkPolicy", "-gateway-metrics")
    deployment = one(docs, "Deployment", "-gateway")
    assert (
        policy["spec"]["podSelector"]["matchLabels"]
        == deployment["spec"]["selector"]["matchLabels"]
    )
    assert policy["spec"]["ingress"] == [
        {
            "from": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "observability"}
                    }
                }
            ],
            "ports": [{"port": "metrics", "protocol": "TCP"}],
        }
    ]
    no_policies = render_docs(
        {**load_values(GATEWAY_MONITOR_SCENARIO), "networkPolicy": {"enabled": False}}
    )
    assert one(no_policies, "ServiceMonitor", "-gateway")
    assert not find(no_policies, "NetworkPolicy")


def test_gateway_monitor_uses_an_existing_secret_and_no_token_without_auth() -> None:
    existing = {"enabled": True, "existingSecret": "gw-auth"}
    docs = render_docs({"gateway": {"serviceMonitor": {"enabled": True}, "auth": existing}})
    endpoint = one(docs, "ServiceMonitor", "-gateway")["spec"]["endpoints"][0]
    assert endpoint["authorization"]["credentials"] == {"name": "gw-auth", "key": "prometheus"}
    docs = render_docs(
        {"gateway": {"serviceMonitor": {"enabled": True}, "auth": {"enabled": False}}}
    )
    assert "authorization" not in one(docs, "ServiceMonitor", "-gateway")["spec"]["endpoints"][0]


def test_gateway_monitor_is_off_by_default() -> None:
    docs = render_docs()
    assert not find(docs, "ServiceMonitor")
    assert not find(docs, "NetworkPolicy", "-gateway-metrics")
