"""The chart's kernel launcher (files/launch_kubernetes.py), run as the gateway would run it.

The launcher and the pod template are taken from the rendered kernelspec ConfigMap and laid out
as the gateway's volume mounts them; the pod goes to an HTTPS server that checks what the API
server would receive (path, bearer token, body).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from chart_testlib import NAMESPACE, one, render_docs

pytestmark = pytest.mark.unit

KERNEL_NS = f"{NAMESPACE}-kernels"
KERNEL_ID = "0f9e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e6f"
SECRET = "gateway-secret-token-do-not-leak"


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kernelspecs/python3/scripts as mounted in the gateway, from a real render."""
    data = one(render_docs({"gateway": {"clientEnvs": ["DATASET"]}}), "ConfigMap", "-kernelspecs")[
        "data"
    ]
    directory = tmp_path_factory.mktemp("kernelspecs") / "python3" / "scripts"
    directory.mkdir(parents=True)
    for key in ("launch_kubernetes.py", "kernel-pod.yaml.j2"):
        (directory / key).write_text(data[key])
    (directory.parent / "kernel.json").write_text(data["python3.kernel.json"])
    return directory


@pytest.fixture(scope="module")
def launcher(scripts: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "launch_kubernetes", scripts / "launch_kubernetes.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _args(**overrides: str) -> argparse.Namespace:
    values = {
        "kernel_id": KERNEL_ID,
        "port_range": "0..0",
        "response_address": "10.1.2.3:8877",
        "public_key": "PUBKEY",
        "kernel_class_name": "",
    }
    values.update(overrides)
    return argparse.Namespace(**values)


def _gateway_env(scripts: Path, **extra: str) -> dict[str, str]:
    """What EG 3.3 gives the launcher: here the worst case, the gateway's whole environment."""
    kernelspec_env = json.loads((scripts.parent / "kernel.json").read_text())["env"]
    return {
        "EG_AUTH_TOKEN": SECRET,
        "HOME": "/tmp/home",
        "KUBERNETES_SERVICE_HOST": "10.96.0.1",
        "KERNEL_POD_NAME": f"jovyan-{KERNEL_ID}",
        "KERNEL_NAMESPACE": KERNEL_NS,
        "KERNEL_USERNAME": "jovyan",
        "DATASET": "/data/shared/in.csv",
        "UNLISTED": "dropped",
        **kernelspec_env,
        **extra,
    }


class Recorder:
    def __init__(self) -> None:
        self.created: list[tuple[str, dict[str, Any]]] = []

    def create_pod(self, namespace: str, pod: dict[str, Any]) -> None:
        self.created.append((namespace, pod))


def test_creates_the_hardened_pod_with_an_allowlisted_environment(
    launcher: ModuleType, scripts: Path
) -> None:
    api = Recorder()
    launcher.launch(_args(), _gateway_env(scripts), api, scripts)
    ((namespace, pod),) = api.created
    assert namespace == pod["metadata"]["namespace"] == KERNEL_NS
    assert pod["metadata"]["name"] == f"jovyan-{KERNEL_ID}"
    assert pod["metadata"]["labels"]["kernel_id"] == KERNEL_ID
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["KERNEL_ID"] == KERNEL_ID
    assert env["RESPONSE_ADDRESS"] == "10.1.2.3:8877"
    assert env["PUBLIC_KEY"] == "PUBKEY"
    assert env["PORT_RANGE"] == "0..0"
    assert env["KERNEL_USERNAME"] == "jovyan"
    assert env["DATASET"] == "/data/shared/in.csv"  # listed in gateway.clientEnvs
    for leaked in (
        "EG_AUTH_TOKEN",
        "HOME",
        "KUBERNETES_SERVICE_HOST",
        "UNLISTED",
        "SANDBOX_CLIENT_ENVS",
    ):
        assert leaked not in env
    assert SECRET not in json.dumps(pod)
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_resources_follow_the_request(launcher: ModuleType, scripts: Path) -> None:
    api = Recorder()
    env = _gateway_env(scripts, KERNEL_CPUS="500m", KERNEL_MEMORY="2Gi", KERNEL_MEMORY_LIMIT="3Gi")
    launcher.launch(_args(), env, api, scripts)
    resources = api.created[0][1]["spec"]["containers"][0]["resources"]
    assert resources == {
        "requests": {"cpu": "500m", "memory": "2Gi"},
        "limits": {"cpu": "500m", "memory": "3Gi"},
    }


@pytest.mark.parametrize(
    "variable, value",
    [
        ("KERNEL_CPUS", '1"\n      privileged: true\n      x: "'),
        ("KERNEL_MEMORY", "lots"),
        ("KERNEL_MEMORY_LIMIT", "1Gi\nhostNetwork: true"),
        ("KERNEL_POD_NAME", "Evil Pod"),
        ("KERNEL_NAMESPACE", "kube-system"),
    ],
)
def test_refuses_client_values_that_could_reshape_or_move_the_pod(
    launcher: ModuleType, scripts: Path, variable: str, value: str
) -> None:
    api = Recorder()
    with pytest.raises(launcher.LaunchError):
        launcher.launch(_args(), _gateway_env(scripts, **{variable: value}), api, scripts)
    assert api.created == []


def test_refuses_a_malformed_kernel_id(launcher: ModuleType, scripts: Path) -> None:
    with pytest.raises(launcher.LaunchError):
        launcher.launch(_args(kernel_id="../../x"), _gateway_env(scripts), Recorder(), scripts)


# --- over HTTPS, as in the gateway pod --------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the test server's certificate")
    directory = tmp_path_factory.mktemp("sa")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(directory / "tls.key"),
            "-out",
            str(directory / "ca.crt"),
        ],
        check=True,
        capture_output=True,
    )
    (directory / "token").write_text("sa-token-123\n")
    return directory


class FakeAPIServer:
    """POST /api/v1/namespaces/<ns>/pods over TLS; answers with a queued status."""

    def __init__(self, tls_dir: Path) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answers: list[tuple[int, dict[str, Any]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                del format, args

            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                server.requests.append(
                    {
                        "path": self.path,
                        "authorization": self.headers["Authorization"],
                        "body": json.loads(self.rfile.read(length)),
                    }
                )
                status, body = server.answers.pop(0) if server.answers else (201, {})
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls_dir / "ca.crt", tls_dir / "tls.key")
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeAPIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture()
def api_server(tls: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAPIServer]:
    with FakeAPIServer(tls) as server:
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(server.port))
        yield server


def test_posts_the_pod_with_the_service_account_token(
    launcher: ModuleType, scripts: Path, tls: Path, api_server: FakeAPIServer
) -> None:
    api = launcher.InClusterAPI(sa_dir=tls)
    launcher.launch(_args(), _gateway_env(scripts), api, scripts)
    (request,) = api_server.requests
    assert request["path"] == f"/api/v1/namespaces/{KERNEL_NS}/pods"
    assert request["authorization"] == "Bearer sa-token-123"
    assert request["body"]["kind"] == "Pod"
    assert request["body"]["metadata"]["labels"]["component"] == "kernel"


def test_an_existing_pod_is_accepted_and_a_refusal_is_reported(
    launcher: ModuleType, scripts: Path, tls: Path, api_server: FakeAPIServer
) -> None:
    api = launcher.InClusterAPI(sa_dir=tls)
    # EG retrying a start with the same kernel id: the pod is there already, which is fine.
    api_server.answers.append(
        (409, {"kind": "Status", "reason": "AlreadyExists", "message": 'pods "x" already exists'})
    )
    launcher.launch(_args(), _gateway_env(scripts), api, scripts)
    api_server.answers.append(
        (
            403,
            {
                "kind": "Status",
                "reason": "Forbidden",
                "message": 'violates PodSecurity "restricted:latest"',
            },
        )
    )
    with pytest.raises(launcher.LaunchError, match=r"403.*PodSecurity"):
        launcher.launch(_args(), _gateway_env(scripts), api, scripts)


def test_command_line_failure_is_one_line_without_the_environment(scripts: Path) -> None:
    # Outside a pod: no service account. The gateway's log gets one line and no secret.
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            str(scripts / "launch_kubernetes.py"),
            "--kernel-id",
            KERNEL_ID,
            "--port-range",
            "0..0",
            "--response-address",
            "10.1.2.3:8877",
            "--public-key",
            "K",
        ],
        env={
            "EG_AUTH_TOKEN": SECRET,
            "KERNEL_POD_NAME": f"jovyan-{KERNEL_ID}",
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "KUBERNETES_SERVICE_HOST" in result.stderr
    assert SECRET not in result.stderr + result.stdout
