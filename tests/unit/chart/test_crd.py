"""The SandboxSession CRD: its shape, and its schema accepting good specs and refusing bad ones.

The schema is checked with ``jsonschema`` after converting the CRD's structural schema to the
JSON Schema the API server effectively enforces:

* every object that lists ``properties`` is closed (``additionalProperties: false``) unless it
  says ``x-kubernetes-preserve-unknown-fields`` - with ``kubectl``'s default strict field
  validation the API server refuses unknown fields (without it, it prunes them silently);
* ``x-kubernetes-validations`` (CEL) rules are translated when they have a known shape, and the
  conversion fails on any other rule, so a rule can never be added without being tested;
* the other ``x-kubernetes-*`` markers only steer merging and listing, and are dropped.

What this cannot prove is the API server's own behaviour (defaulting, CEL cost limits, status
subresource isolation): the kind e2e workflow applies the same samples to a real API server.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from chart_testlib import REPO_ROOT, crd

pytestmark = pytest.mark.unit

EXAMPLES = REPO_ROOT / "examples" / "k8s"
GOOD = sorted(EXAMPLES.glob("*.yaml"))
BAD = sorted((EXAMPLES / "invalid").glob("*.yaml"))

# self.all(k, k.matches('<regex>')) on a map: every key matches the regex.
ALL_KEYS_MATCH = re.compile(r"""^self\.all\((\w+), \1\.matches\('(?P<regex>[^']+)'\)\)$""")


def to_json_schema(node: dict[str, Any], path: str = "$") -> dict[str, Any]:
    """Convert one structural-schema node (recursively) to plain JSON Schema."""
    out: dict[str, Any] = {}
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    # Structural schemas give every node a type, except nodes that preserve unknown fields.
    assert "type" in node or preserve, f"{path}: not structural (no type)"
    for key, value in node.items():
        if key == "properties":
            out["properties"] = {k: to_json_schema(v, f"{path}.{k}") for k, v in value.items()}
        elif key == "items":
            out["items"] = to_json_schema(value, f"{path}[]")
        elif key == "additionalProperties" and isinstance(value, dict):
            out["additionalProperties"] = to_json_schema(value, f"{path}.*")
        elif key == "x-kubernetes-validations":
            for rule in value:
                match = ALL_KEYS_MATCH.match(rule["rule"])
                if not match:
                    raise NotImplementedError(
                        f"{path}: no translation for CEL rule {rule['rule']!r}"
                    )
                out["propertyNames"] = {"pattern": match["regex"]}
        elif key.startswith("x-kubernetes-"):
            continue
        else:
            out[key] = copy.deepcopy(value)
    if node.get("type") == "object" and "properties" in node and not preserve:
        out.setdefault("additionalProperties", False)
    return out


def schema() -> dict[str, Any]:
    (version,) = crd()["spec"]["versions"]
    return to_json_schema(version["schema"]["openAPIV3Schema"])


def validate(obj: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(schema(), format_checker=jsonschema.FormatChecker()).validate(obj)


def load(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict)
    return loaded


def session(spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "minisandbox.dev/v1alpha1",
        "kind": "SandboxSession",
        "metadata": {"name": "t"},
        "spec": spec,
    }
    if status is not None:
        obj["status"] = status
    return obj


def test_crd_identity() -> None:
    definition = crd()
    spec = definition["spec"]
    assert definition["metadata"]["name"] == "sandboxsessions.minisandbox.dev"
    assert spec["group"] == "minisandbox.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "SandboxSession"
    assert spec["names"]["plural"] == "sandboxsessions"
    assert spec["names"]["shortNames"] == ["sbs"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


def test_kubectl_get_prints_phase_kernel_and_age() -> None:
    (version,) = crd()["spec"]["versions"]
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert list(columns) == ["Phase", "Kernel", "Age"]
    assert columns["Phase"]["jsonPath"] == ".status.phase"
    assert columns["Kernel"]["jsonPath"] == ".status.kernelId"
    assert columns["Age"] == {
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
    }


def test_spec_rejects_unknown_fields_and_defaults_the_kernel() -> None:
    (version,) = crd()["spec"]["versions"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert "x-kubernetes-preserve-unknown-fields" not in spec
    assert "x-kubernetes-preserve-unknown-fields" not in spec["properties"]["resources"]
    assert spec["properties"]["kernelName"]["default"] == "python3"
    assert set(spec["properties"]) == {
        "kernelName",
        "env",
        "resources",
        "idleTimeoutSeconds",
        "maxLifetimeSeconds",
    }


def test_status_carries_what_clients_and_kubectl_need() -> None:
    (version,) = crd()["spec"]["versions"]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == [
        "Pending",
        "Starting",
        "Ready",
        "Failed",
        "Terminating",
        "Expired",
    ]
    assert {
        "kernelId",
        "gatewayUrl",
        "websocketUrl",
        "lastActivity",
        "message",
        "conditions",
        "observedGeneration",
    } <= set(status)


@pytest.mark.parametrize("path", GOOD, ids=[p.stem for p in GOOD])
def test_good_samples_are_accepted(path: Path) -> None:
    validate(load(path))


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_samples_are_rejected(path: Path) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate(load(path))


def test_there_are_good_and_bad_samples() -> None:
    assert len(GOOD) >= 2 and len(BAD) >= 6


def test_each_bad_sample_fails_for_its_own_reason() -> None:
    # A bad sample that is refused for an unrelated slip proves nothing: repair the offending
    # field and the sample must become valid.
    repairs = {
        "wrong-types": lambda s: s.update(idleTimeoutSeconds=600, resources={"cpu": "2"}),
        "negative-timeout": lambda s: s.update(maxLifetimeSeconds=60),
        "zero-idle-timeout": lambda s: s.update(idleTimeoutSeconds=1),
        "unknown-field": lambda s: s.pop("image"),
        "bad-kernel-name": lambda s: s.update(kernelName="python3"),
        "bad-memory-quantity": lambda s: s.update(resources={"memory": "512Mi"}),
        "env-not-strings": lambda s: s.update(env={"THREADS": "4"}),
        "unknown-resource": lambda s: s.update(resources={"cpu": "1"}),
    }
    assert set(repairs) == {p.stem for p in BAD}
    for path in BAD:
        sample = load(path)
        repairs[path.stem](sample["spec"])
        validate(sample)


GOOD_SPECS = {
    "empty": {},
    "millicores": {"resources": {"cpu": "250m", "memory": "128Mi"}},
    "fractional cpu": {"resources": {"cpu": "0.5"}},
    "decimal memory": {"resources": {"memory": "1G"}},
    "exponent memory": {"resources": {"memory": "129e6"}},
    "dotted kernel name": {"kernelName": "python3.11"},
    "env": {"env": {"MY_VAR": "x", "_private": ""}},
}
BAD_SPECS = {
    "integer cpu": {"resources": {"cpu": 1}},
    "negative cpu": {"resources": {"cpu": "-1"}},
    "unit typo": {"resources": {"memory": "512MB"}},
    "timeout as string": {"maxLifetimeSeconds": "3600"},
    "timeout as float": {"idleTimeoutSeconds": 1.5},
    "negative idle": {"idleTimeoutSeconds": -1},
    "upper-case kernel": {"kernelName": "Python3"},
    "empty kernel": {"kernelName": ""},
    "env name with dash": {"env": {"MY-VAR": "x"}},
    "env name starting with digit": {"env": {"1VAR": "x"}},
    "env value null": {"env": {"A": None}},
    "env as list": {"env": ["A=1"]},
    "spec as string": "python3",
}


@pytest.mark.parametrize("spec", GOOD_SPECS.values(), ids=GOOD_SPECS.keys())
def test_good_specs(spec: dict[str, Any]) -> None:
    validate(session(spec))


@pytest.mark.parametrize("spec", BAD_SPECS.values(), ids=BAD_SPECS.keys())
def test_bad_specs(spec: Any) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate(session(spec))


def test_missing_spec_is_rejected() -> None:
    obj = session({})
    del obj["spec"]
    with pytest.raises(jsonschema.ValidationError):
        validate(obj)


def test_status_as_the_controller_writes_it() -> None:
    ready = {
        "phase": "Ready",
        "kernelId": "5e2c4a8e-8d8c-4c56-9b59-3f0f3f6c2a10",
        "gatewayUrl": "https://gateway.example.com",
        "websocketUrl": "wss://gateway.example.com/api/kernels/5e2c4a8e-8d8c-4c56-9b59-3f0f3f6c2a10/channels",
        "lastActivity": "2026-11-26T04:50:00Z",
        "message": "kernel is ready",
        "observedGeneration": 1,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "KernelStarted",
                "lastTransitionTime": "2026-11-26T04:49:58Z",
            }
        ],
        "kopf": {"progress": {"create": {"retries": 0}}},
    }
    validate(session({}, ready))
    for bad in (
        {"phase": "Running"},
        {"observedGeneration": -1},
        {"conditions": [{"type": "Ready", "status": "yes"}]},
        {"conditions": [{"status": "True"}]},
        {"kernelID": "typo"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            validate(session({}, bad))


def test_conversion_refuses_untranslated_cel() -> None:
    with pytest.raises(NotImplementedError):
        to_json_schema({"type": "object", "x-kubernetes-validations": [{"rule": "size(self) < 3"}]})
