"""values.schema.json refuses bad values; values.yaml documents every key."""

from __future__ import annotations

import json
import re
from typing import Any

import helm_python
import pytest
import yaml
from chart_testlib import CHART_DIR, render

pytestmark = pytest.mark.unit

SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())
VALUES_TEXT = (CHART_DIR / "values.yaml").read_text()

# Each case is a value a user could plausibly type, and what the schema must say about it.
BAD_VALUES: dict[str, dict[str, Any]] = {
    "unknown top-level key": {"gatway": {"replicas": 2}},
    "unknown nested key": {"gateway": {"auth": {"tokn": "x" * 20}}},
    "wrong type": {"gateway": {"replicas": "two"}},
    "root user": {"securityContext": {"runAsUser": 0}},
    "port out of range": {"fileserver": {"port": 70000}},
    "unknown storage backend": {"sharedVolume": {"backend": "s3"}},
    "unknown access mode": {"sharedVolume": {"accessMode": "ReadWriteSometimes"}},
    "not a cpu quantity": {"kernels": {"resources": {"cpu": "lots"}}},
    "kernel of zero cpu (unlimited)": {"kernels": {"resources": {"cpu": "0"}}},
    "kernel of zero memory": {"kernels": {"resources": {"memory": "0.0Gi"}}},
    "zero maximum": {"kernels": {"limitRange": {"max": {"cpu": "0m"}}}},
    "kernel request apart from its limit": {
        "kernels": {"resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "2"}}}
    },
    "quota on limits only": {"kernels": {"resourceQuota": {"limitsCpu": "50"}}},
    "not a memory quantity": {"kernels": {"limitRange": {"max": {"memory": "4 gigs"}}}},
    "metadata endpoint unblocked": {"networkPolicy": {"blockedCIDRs": ["10.0.0.0/8"]}},
    "secret inherited by kernels": {"gateway": {"inheritedEnvs": ["PATH", "EG_AUTH_TOKEN"]}},
    "no kernelspec": {"kernels": {"specs": []}},
    "bad kernelspec name": {"kernels": {"specs": [{"name": "Python 3", "displayName": "x"}]}},
    "bad log level": {"gateway": {"logLevel": "LOUD"}},
    "resources without limits": {
        "notebook": {"resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": None}}
    },
    "short token": {"fileserver": {"auth": {"token": "abc"}}},
    "bad runtime class": {"kernels": {"runtimeClassName": "gVisor!"}},
    "negative cull timeout": {"gateway": {"cullIdleTimeout": -1}},
    "public gateway url not http": {"controller": {"publicGatewayUrl": "gateway.example.com"}},
}


@pytest.mark.parametrize("values", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_schema_refuses(values: dict[str, Any]) -> None:
    with pytest.raises(helm_python.HelmValuesError):
        render(values)


def test_schema_accepts_the_defaults_and_a_full_override() -> None:
    render()
    render(
        {"gateway": {"replicas": 3, "logLevel": "DEBUG"}, "kernels": {"runtimeClassName": "gvisor"}}
    )


def _objects(node: dict[str, Any], path: str = "$") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if node.get("type") == "object" and "properties" in node:
        found.append((path, node))
    for key, child in node.get("properties", {}).items():
        found += _objects(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        found += _objects(node["items"], f"{path}[]")
    return found


def test_every_schema_object_is_closed_and_fully_required() -> None:
    objects = _objects(SCHEMA)
    assert len(objects) > 40
    for path, node in objects:
        assert node.get("additionalProperties") is False, path
        # "global" is Helm's, injected for subcharts, and the one optional key.
        assert set(node.get("required", [])) == set(node["properties"]) - {"global"}, path


def test_schema_describes_every_default_value() -> None:
    # A key in values.yaml that the schema does not know would be refused at install time;
    # walking both makes a missing schema entry fail here first, with a clear path.
    def walk(values: Any, schema: dict[str, Any], path: str) -> None:
        if isinstance(values, dict) and "properties" in schema:
            for key, value in values.items():
                assert key in schema["properties"], f"{path}.{key} missing from the schema"
                walk(value, schema["properties"][key], f"{path}.{key}")
        elif isinstance(values, list) and isinstance(schema.get("items"), dict):
            for item in values:
                walk(item, schema["items"], f"{path}[]")

    walk(yaml.safe_load(VALUES_TEXT), SCHEMA, "$")


# Blocks whose inner keys are a default value shown as an example (a resources stanza, a
# label map) rather than settings of their own: the comment on the block covers them.
VALUE_BLOCKS = {
    "resources",
    "max",
    "labels",
    "namespaceLabels",
    "podLabels",
    "ingressControllerNamespaceLabels",
    "monitoringNamespaceLabels",
}
KEY_LINE = re.compile(r"^(?P<indent>\s*)(?:- )?(?P<key>[A-Za-z0-9_.-]+):(?:\s|$)")


def test_every_key_in_values_yaml_is_commented() -> None:
    undocumented = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing blocks
    previous = ""
    for line in VALUES_TEXT.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        match = KEY_LINE.match(line)
        if match:
            indent = len(match["indent"]) + (2 if line.lstrip().startswith("- ") else 0)
            while stack and stack[-1][0] >= indent:
                stack.pop()
            inside_value_block = any(key in VALUE_BLOCKS for _, key in stack)
            commented = previous.startswith("#") or previous.startswith("- #")
            if not commented and not inside_value_block:
                undocumented.append(stripped)
            stack.append((indent, match["key"]))
        previous = stripped
    assert undocumented == []


def test_comment_check_notices_an_undocumented_key() -> None:
    # The check above must be able to fail: strip one comment and it does.
    global VALUES_TEXT
    original = VALUES_TEXT
    try:
        VALUES_TEXT = original.replace(
            "  replicas: 1\n", "  replicas: 1\n  undocumented: true\n", 1
        )
        assert original != VALUES_TEXT
        with pytest.raises(AssertionError):
            test_every_key_in_values_yaml_is_commented()
    finally:
        VALUES_TEXT = original
