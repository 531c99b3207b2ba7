"""The SandboxSession CRD: its shape, and its schema accepting good specs and refusing bad ones.

An object is checked as the API server checks it, in two parts:

* ``jsonschema`` against the CRD's structural schema converted to the JSON Schema the API server
  effectively enforces: every object that lists ``properties`` is closed
  (``additionalProperties: false``) unless it says ``x-kubernetes-preserve-unknown-fields`` -
  with ``kubectl``'s default strict field validation the API server refuses unknown fields
  (without it, it prunes them silently); the ``x-kubernetes-*`` markers are dropped there;
* every ``x-kubernetes-validations`` rule is then evaluated for real, with ``self`` bound to the
  value at its node, by a CEL implementation (cel-python, RE2 regular expressions like the API
  server's). A rule that does not compile fails the tests, so no rule goes untested.

What this cannot prove is the API server's own behaviour (defaulting, CEL type checking and cost
limits, status subresource isolation): tests/integration/k8s and the Kubernetes e2e suite apply
the same samples to a real API server.
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import celpy
import helm_python
import jsonschema
import pytest
import yaml
from chart_testlib import CHART_DIR, REPO_ROOT, crd

from controller.platform_env import RESERVED_ENV_NAMES, RESERVED_ENV_PREFIXES

pytestmark = pytest.mark.unit

EXAMPLES = REPO_ROOT / "examples" / "k8s"
GOOD = sorted(EXAMPLES.glob("*.yaml"))
BAD = sorted((EXAMPLES / "invalid").glob("*.yaml"))


def to_json_schema(node: dict[str, Any], path: str = "$") -> dict[str, Any]:
    """Convert one structural-schema node (recursively) to plain JSON Schema, CEL rules aside."""
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
        elif key.startswith("x-kubernetes-"):
            continue  # CEL rules are evaluated by check_cel; the rest steers merging/listing
        else:
            out[key] = copy.deepcopy(value)
    if node.get("type") == "object" and "properties" in node and not preserve:
        out.setdefault("additionalProperties", False)
    return out


@functools.cache
def cel_program(rule: str) -> celpy.Runner:
    """A compiled CEL rule; a rule that does not parse raises here (and fails its test)."""
    environment = celpy.Environment()
    return environment.program(environment.compile(rule))


def cel_holds(rule: str, value: Any) -> bool:
    """Whether ``rule`` is true with ``self`` = ``value``; an evaluation error counts as false,
    as it does for the API server."""
    result = cel_program(rule).evaluate({"self": celpy.json_to_cel(value)})
    return isinstance(result, celpy.celtypes.BoolType) and bool(result)


def check_cel(node: dict[str, Any], value: Any, path: str = "$") -> None:
    """Evaluate every x-kubernetes-validations rule of ``node`` and below against ``value``."""
    for rule in node.get("x-kubernetes-validations", []):
        if not cel_holds(rule["rule"], value):
            raise jsonschema.ValidationError(f"{path}: {rule['message']}")
    if isinstance(value, dict):
        properties = node.get("properties", {})
        extra = node.get("additionalProperties")
        for key, child in value.items():
            if key in properties:
                check_cel(properties[key], child, f"{path}.{key}")
            elif isinstance(extra, dict):
                check_cel(extra, child, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for index, item in enumerate(value):
            check_cel(node["items"], item, f"{path}[{index}]")


def structural_schema() -> dict[str, Any]:
    (version,) = crd()["spec"]["versions"]
    openapi: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return openapi


def schema() -> dict[str, Any]:
    return to_json_schema(structural_schema())


def validate(obj: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(schema(), format_checker=jsonschema.FormatChecker()).validate(obj)
    check_cel(structural_schema(), obj)


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


def test_spec_rejects_unknown_fields_and_leaves_the_kernel_default_to_the_controller() -> None:
    (version,) = crd()["spec"]["versions"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert "x-kubernetes-preserve-unknown-fields" not in spec
    assert "x-kubernetes-preserve-unknown-fields" not in spec["properties"]["resources"]
    # One source of truth: a CRD default would always win over SANDBOX_DEFAULT_KERNEL_NAME.
    assert "default" not in spec["properties"]["kernelName"]
    assert set(spec["properties"]) == {
        "kernelName",
        "env",
        "resources",
        "idleTimeoutSeconds",
        "maxLifetimeSeconds",
        "egress",
    }
    assert "x-kubernetes-preserve-unknown-fields" not in spec["properties"]["egress"]


def test_status_carries_what_clients_and_kubectl_need() -> None:
    (version,) = crd()["spec"]["versions"]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == [
        "Pending",
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
        "reserved-env": lambda s: s.update(env={"DATASET": "/data/shared/input.csv"}),
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
    "binary kilo memory": {"resources": {"memory": "262144Ki"}},
    "decimal kilo memory": {"resources": {"memory": "256000k"}},
    "exponent memory": {"resources": {"memory": "129e6"}},
    "dotted kernel name": {"kernelName": "python3.11"},
    "env": {"env": {"MY_VAR": "x", "_private": ""}},
    "env with the user's own KERNEL_ names": {"env": {"KERNEL_GREETING": "hi", "KERNEL_IDX": "1"}},
    "egress list": {
        "egress": {"allow": ["pypi.org", "*.pythonhosted.org", "api.example.org:8443"]}
    },
    "no egress": {"egress": {}},
    "an empty egress list": {"egress": {"allow": []}},
}
BAD_SPECS = {
    "integer cpu": {"resources": {"cpu": 1}},
    "negative cpu": {"resources": {"cpu": "-1"}},
    "unit typo": {"resources": {"memory": "512MB"}},
    "lower-case binary kilo": {"resources": {"memory": "262144ki"}},
    "timeout as string": {"maxLifetimeSeconds": "3600"},
    "timeout as float": {"idleTimeoutSeconds": 1.5},
    "negative idle": {"idleTimeoutSeconds": -1},
    "upper-case kernel": {"kernelName": "Python3"},
    "empty kernel": {"kernelName": ""},
    "env name with dash": {"env": {"MY-VAR": "x"}},
    "env name starting with digit": {"env": {"1VAR": "x"}},
    "env value null": {"env": {"A": None}},
    "env as list": {"env": ["A=1"]},
    "env sizes the kernel": {"env": {"KERNEL_MEMORY_LIMIT": "64Gi"}},
    "env names another user": {"env": {"KERNEL_USERNAME": "admin"}},
    "spec as string": "python3",
    "egress as a string": {"egress": "pypi.org"},
    "egress list as a string": {"egress": {"allow": "pypi.org"}},
    "egress entry as a URL": {"egress": {"allow": ["https://pypi.org"]}},
    "egress entry with a path": {"egress": {"allow": ["pypi.org/simple"]}},
    "egress entry everything": {"egress": {"allow": ["*"]}},
    "egress entry empty": {"egress": {"allow": [""]}},
    "egress entry with a named port": {"egress": {"allow": ["pypi.org:https"]}},
    "egress list too long": {"egress": {"allow": [f"h{i}.example.org" for i in range(65)]}},
    "egress field unknown": {"egress": {"deny": ["pypi.org"]}},
    "egress through env": {"env": {"KERNEL_EGRESS_ALLOW": "pypi.org"}},
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


def test_cel_rules_are_evaluated_not_skipped() -> None:
    node = {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "x-kubernetes-validations": [{"rule": "size(self) < 2", "message": "too many"}],
    }
    check_cel(node, {"a": "1"})
    with pytest.raises(jsonschema.ValidationError, match="too many"):
        check_cel(node, {"a": "1", "b": "2"})
    # A rule with a syntax error cannot pass silently.
    with pytest.raises(celpy.CELParseError):
        check_cel({"x-kubernetes-validations": [{"rule": "self.all(k,", "message": "m"}]}, {})


# --- spec.env: the variables the platform controls ------------------------------------------

# self.all(k, !(k in ['A', ...]) && !k.startsWith('P') && ...), whitespace normalised.
RESERVED_RULE = re.compile(
    r"^self\.all\(k, !\(k in \[(?P<names>[^\]]*)\]\)"
    r"(?P<prefixes>(?: && !k\.startsWith\('[A-Z_]+'\))*)\)$"
)


def shipped_env_rules() -> list[dict[str, str]]:
    """The spec.env CEL rules of the CRD as Helm installs it (the chart's crds/)."""
    with helm_python.Chart.load(CHART_DIR) as chart:
        (shipped,) = chart.crds
        definition = yaml.safe_load(shipped["data"])
    (version,) = definition["spec"]["versions"]
    env = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["env"]
    rules: list[dict[str, str]] = env["x-kubernetes-validations"]
    return rules


def reserved_rule() -> tuple[dict[str, str], list[str], list[str]]:
    """The rule refusing reserved names, with the names and prefixes it lists."""
    found = []
    for rule in shipped_env_rules():
        match = RESERVED_RULE.match(" ".join(rule["rule"].split()))
        if match:
            names = re.findall(r"'([^']*)'", match["names"])
            prefixes = re.findall(r"'([^']*)'", match["prefixes"])
            found.append((rule, names, prefixes))
    assert len(found) == 1, "spec.env must carry exactly one reserved-names rule"
    return found[0]


def test_the_crd_reserves_exactly_the_controllers_list() -> None:
    rule, names, prefixes = reserved_rule()
    assert len(names) == len(set(names)), "a name is listed twice"
    assert sorted(names) == sorted(RESERVED_ENV_NAMES)
    assert prefixes == list(RESERVED_ENV_PREFIXES)
    # The message a user sees at kubectl apply names them all, too.
    listed = set(re.findall(r"[A-Z][A-Z0-9_]+\*?", rule["message"]))
    assert listed == set(RESERVED_ENV_NAMES) | {f"{p}*" for p in RESERVED_ENV_PREFIXES}


def test_the_list_check_notices_a_missing_name() -> None:
    rule, _, _ = reserved_rule()
    text = " ".join(rule["rule"].split())
    without = text.replace("'KERNEL_USERNAME', ", "")
    assert without != text
    match = RESERVED_RULE.match(without)
    assert match is not None
    assert sorted(re.findall(r"'([^']*)'", match["names"])) != sorted(RESERVED_ENV_NAMES)


@pytest.mark.parametrize(
    "name",
    [
        *RESERVED_ENV_NAMES,
        *RESERVED_ENV_PREFIXES,
        *(f"{prefix}_LIMIT" for prefix in RESERVED_ENV_PREFIXES),
    ],
)
def test_the_crd_refuses_a_reserved_name(name: str) -> None:
    with pytest.raises(jsonschema.ValidationError, match="platform controls"):
        validate(session({"env": {"DATASET": "x", name: "1"}}))


@pytest.mark.parametrize(
    "name", ["KERNEL_GREETING", "KERNEL_IDX", "KERNEL_CPU", "MEMORY", "kernel_memory", "DATASET"]
)
def test_the_crd_accepts_the_users_own_names(name: str) -> None:
    validate(session({"env": {name: "1"}}))
