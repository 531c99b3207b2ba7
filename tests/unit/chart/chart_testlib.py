"""Shared helpers of the chart tests: real Helm (helm-python-sdk), real schemas, a fake API server.

Everything renders through Helm's Go SDK, exactly as ``helm template`` would; nothing here
re-implements Helm. The one stand-in is :class:`FakeKubeAPI`, a few HTTP endpoints of the
Kubernetes API that Helm's ``lookup`` reads, so that "a token survives an upgrade" is proven by
Helm itself talking HTTP to something that answers like an API server.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import helm_python
import jinja2
import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
CHART_DIR = REPO_ROOT / "charts" / "mini-jupyter-sandbox"
CI_DIR = CHART_DIR / "ci"
CRD_FILE = CHART_DIR / "crds" / "sandboxsessions.minisandbox.dev.yaml"
RELEASE = "demo"
NAMESPACE = "sandbox"

# Kinds that run pods, and where their pod spec lives.
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}


def ci_scenarios() -> list[Path]:
    """Every values scenario under ci/, sorted so test ids are stable."""
    return sorted(CI_DIR.glob("*-values.yaml"))


def load_values(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text()) or {}
    assert isinstance(loaded, dict), f"{path} is not a mapping"
    return loaded


def render(
    values: dict[str, Any] | None = None, *, name: str = RELEASE, namespace: str = NAMESPACE
) -> dict[str, str]:
    """Render the chart offline (lookup returns nothing) -> {template path: manifest text}."""
    with helm_python.Chart.load(CHART_DIR) as chart:
        return chart.render(values, name=name, namespace=namespace)


def parse(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """All objects of a render, NOTES.txt and empty documents left out."""
    docs: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                assert isinstance(doc, dict), f"{path}: a document is not a mapping"
                doc.setdefault("metadata", {}).setdefault("annotations", {})
                docs.append(doc)
    return docs


def render_docs(values: dict[str, Any] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    return parse(render(values, **kwargs))


def find(
    docs: list[dict[str, Any]], kind: str, name_suffix: str | None = None
) -> list[dict[str, Any]]:
    return [
        d
        for d in docs
        if d.get("kind") == kind
        and (name_suffix is None or d["metadata"]["name"].endswith(name_suffix))
    ]


def one(docs: list[dict[str, Any]], kind: str, name_suffix: str | None = None) -> dict[str, Any]:
    found = find(docs, kind, name_suffix)
    assert len(found) == 1, (
        f"expected one {kind} *{name_suffix}, got {[d['metadata']['name'] for d in found]}"
    )
    return found[0]


def kernel_pod(docs: list[dict[str, Any]], **keywords: Any) -> dict[str, Any]:
    """The kernel pod as the gateway's launcher would create it.

    The launcher renders kernel-pod.yaml.j2 with Jinja and its checked keywords (kernel_id,
    kernel_pod_name, kernelspec_image, and cpu / memory when the client asked for a size);
    rendering it the same way here checks the pod that actually runs, not the template text.
    """
    configmap = one(docs, "ConfigMap", "-kernelspecs")
    template = configmap["data"]["kernel-pod.yaml.j2"]
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.Undefined)
    images = kernel_images(docs)
    base = {
        "kernel_id": "8f0f5c9e-2b65-4d5e-9d65-0b3a3c1d7e11",
        "kernel_pod_name": "jovyan-8f0f5c9e-2b65-4d5e-9d65-0b3a3c1d7e11",
        "kernel_namespace": "ignored-by-the-template",
        # The image its launcher is given (its kernelspec's --image): python3's, or the first's.
        "kernelspec_image": images.get("python3") or next(iter(images.values())),
    }
    rendered = env.from_string(template).render(**{**base, **keywords})
    pods = [d for d in yaml.safe_load_all(rendered) if d]
    assert len(pods) == 1 and pods[0]["kind"] == "Pod", (
        "the kernel template must hold exactly one Pod"
    )
    pod: dict[str, Any] = pods[0]
    return pod


def kernel_images(docs: list[dict[str, Any]]) -> dict[str, str]:
    """Each kernelspec's image, as its argv gives it to the launcher (``--image``)."""
    configmap = one(docs, "ConfigMap", "-kernelspecs")
    images = {}
    for key, text in sorted(configmap["data"].items()):
        if key.endswith(".kernel.json"):
            argv = json.loads(text)["argv"]
            images[key.removesuffix(".kernel.json")] = argv[argv.index("--image") + 1]
    return images


def pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every pod spec the chart can put on a node: workloads plus the kernel pod template."""
    specs: dict[str, dict[str, Any]] = {}
    for d in docs:
        if d["kind"] in WORKLOAD_KINDS:
            specs[f"{d['kind']}/{d['metadata']['name']}"] = d["spec"]["template"]["spec"]
        elif d["kind"] == "Pod":
            specs[f"Pod/{d['metadata']['name']}"] = d["spec"]
    if find(docs, "ConfigMap", "-kernelspecs"):
        specs["kernel-pod.yaml.j2"] = kernel_pod(docs)["spec"]
    return specs


def crd() -> dict[str, Any]:
    loaded = yaml.safe_load(CRD_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


class FakeKubeAPI:
    """Just enough of the Kubernetes API for Helm's ``lookup`` of Secrets, over real HTTP.

    Serves discovery for core/v1 secrets and GET of the Secrets it holds; anything else is a
    404 Status, which is what ``lookup`` turns into "not found". Requests are recorded so a test
    can show that Helm really asked.
    """

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                del format, args

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                api.requests.append(self.path)
                path = self.path.split("?", 1)[0].strip("/")
                parts = path.split("/")
                if path == "version":
                    self._send(200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0"})
                elif path == "api":
                    self._send(
                        200,
                        {
                            "kind": "APIVersions",
                            "versions": ["v1"],
                            "serverAddressByClientCIDRs": [],
                        },
                    )
                elif path == "apis":
                    self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
                elif path == "api/v1":
                    self._send(
                        200,
                        {
                            "kind": "APIResourceList",
                            "groupVersion": "v1",
                            "resources": [
                                {
                                    "name": "secrets",
                                    "singularName": "secret",
                                    "namespaced": True,
                                    "kind": "Secret",
                                    "verbs": ["get", "list"],
                                }
                            ],
                        },
                    )
                elif (
                    len(parts) == 6
                    and parts[:3] == ["api", "v1", "namespaces"]
                    and parts[4] == "secrets"
                    and (parts[3], parts[5]) in api.secrets
                ):
                    self._send(200, api.secrets[(parts[3], parts[5])])
                else:
                    self._send(
                        404,
                        {
                            "kind": "Status",
                            "apiVersion": "v1",
                            "status": "Failure",
                            "reason": "NotFound",
                            "code": 404,
                        },
                    )

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def store_secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        self.secrets[(namespace, name)] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        }

    @property
    def kubeconfig(self) -> str:
        host, port = self._server.server_address[:2]
        return yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": f"http://{host}:{port}"}}],
                "users": [{"name": "tester", "user": {"token": "not-checked"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "tester"}}],
                "current-context": "fake",
            }
        )

    def __enter__(self) -> FakeKubeAPI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@contextmanager
def cluster_render(api: FakeKubeAPI) -> Iterator[Any]:
    """A render function whose ``lookup`` asks ``api`` (Helm's cluster-aware render)."""
    with (
        helm_python.Config(kubeconfig_content=api.kubeconfig, namespace=NAMESPACE) as cfg,
        helm_python.Chart.load(CHART_DIR) as chart,
    ):

        def _render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
            return parse(cfg.render(chart, values, name=RELEASE, namespace=NAMESPACE))

        yield _render
