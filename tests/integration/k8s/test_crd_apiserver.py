"""The SandboxSession CRD on a real kube-apiserver (etcd and the API server of
``testkit.cluster``, built from Kubernetes' Go modules): every sample of ``examples/k8s`` is
admitted, every sample of ``examples/k8s/invalid`` is refused at create, and nothing refused is
stored.  ``tests/unit/chart/test_crd.py`` checks the same samples with a CEL library; this is the
API server's own verdict (its CEL, defaulting and strict field validation).

Needs Go (the binaries are built on first use and cached); without it the tests skip, unless
``SANDBOX_REQUIRE_K8S=1`` makes that a failure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from testkit.cluster.control_plane import ControlPlane

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[3]
CRD = REPO / "charts" / "mini-jupyter-sandbox" / "crds" / "sandboxsessions.minisandbox.dev.yaml"
GOOD = sorted((REPO / "examples" / "k8s").glob("*.yaml"))
BAD = sorted((REPO / "examples" / "k8s" / "invalid").glob("*.yaml"))
NAMESPACE = "sessions"
SESSIONS = f"/apis/minisandbox.dev/v1alpha1/namespaces/{NAMESPACE}/sandboxsessions"
# kubectl's default: unknown fields are an error, not silently dropped.
STRICT = {"fieldValidation": "Strict"}


@pytest.fixture(scope="module")
def api() -> Iterator[ControlPlane]:
    if shutil.which("go") is None:
        if os.environ.get("SANDBOX_REQUIRE_K8S") == "1":
            pytest.fail("SANDBOX_REQUIRE_K8S=1 but there is no go to build Kubernetes with")
        pytest.skip("no go on PATH: cannot build kube-apiserver")
    with ControlPlane(Path(tempfile.mkdtemp(prefix="k8s-api-"))) as plane:
        created = plane.request(
            "POST",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            json=yaml.safe_load(CRD.read_text()),
        )
        assert created.status_code == 201, created.text
        _wait_established(plane, created.json()["metadata"]["name"])
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        assert plane.request("POST", "/api/v1/namespaces", json=namespace).status_code == 201
        yield plane


def _wait_established(plane: ControlPlane, name: str) -> None:
    deadline = time.monotonic() + 60
    path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
    while time.monotonic() < deadline:
        # A CRD just created may show "conditions": null until its controller has looked at it.
        status = plane.request("GET", path).json().get("status") or {}
        conditions = status.get("conditions") or []
        established = any(c["type"] == "Established" and c["status"] == "True" for c in conditions)
        # Serving the new resource can lag the condition by a moment.
        if established and plane.request("GET", SESSIONS).status_code == 200:
            return
        time.sleep(0.2)
    raise AssertionError(f"CRD {name} not established in 60s")


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def stored(plane: ControlPlane) -> list[str]:
    return [item["metadata"]["name"] for item in plane.request("GET", SESSIONS).json()["items"]]


@pytest.mark.parametrize("sample", GOOD, ids=[p.stem for p in GOOD])
def test_good_samples_are_admitted(api: ControlPlane, sample: Path) -> None:
    response = api.request("POST", SESSIONS, params=STRICT, json=load(sample))
    assert response.status_code == 201, response.text
    name = response.json()["metadata"]["name"]
    assert api.request("DELETE", f"{SESSIONS}/{name}").status_code == 200


@pytest.mark.parametrize("sample", BAD, ids=[p.stem for p in BAD])
def test_bad_samples_are_refused_at_create(api: ControlPlane, sample: Path) -> None:
    session = load(sample)
    response = api.request("POST", SESSIONS, params=STRICT, json=session)
    # 422 Invalid for the schema and its CEL rules; 400 for strict decoding of unknown fields.
    assert response.status_code in (400, 422), response.text
    assert session["metadata"]["name"] not in stored(api)


def test_reserved_env_is_refused_by_the_cel_rule(api: ControlPlane) -> None:
    response = api.request(
        "POST", SESSIONS, params=STRICT, json=load(BAD[0].parent / "reserved-env.yaml")
    )
    assert response.status_code == 422, response.text
    message = response.json()["message"]
    assert "spec.env" in message and "KERNEL_MEMORY" in message, message


def test_an_unknown_field_is_an_error_under_strict_validation(api: ControlPlane) -> None:
    response = api.request(
        "POST", SESSIONS, params=STRICT, json=load(BAD[0].parent / "unknown-field.yaml")
    )
    assert response.status_code in (400, 422), response.text
    assert 'unknown field "spec.image"' in response.json()["message"]


def test_without_strict_validation_an_unknown_field_is_dropped_never_stored(
    api: ControlPlane,
) -> None:
    session = load(BAD[0].parent / "unknown-field.yaml")
    session["metadata"]["name"] = "pruned"
    response = api.request("POST", SESSIONS, json=session)
    assert response.status_code == 201, response.text
    try:
        stored_spec = api.request("GET", f"{SESSIONS}/pruned").json()["spec"]
        assert "image" not in stored_spec
        assert response.headers.get("Warning", "").count("unknown field") == 1
    finally:
        api.request("DELETE", f"{SESSIONS}/pruned")
