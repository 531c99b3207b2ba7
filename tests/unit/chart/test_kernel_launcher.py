"""The chart's kernel launcher (files/launch_kubernetes.py), run as the gateway would run it.

The launcher and the pod template are taken from the rendered kernelspec ConfigMap and laid out
as the gateway's volume mounts them; the pod goes to an HTTPS server that checks what the API
server would receive (path, bearer token, body).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import re
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


@functools.cache
def _load(scripts: Path) -> ModuleType:
    """The launcher module as the gateway would run it (loaded once per scripts directory)."""
    spec = importlib.util.spec_from_file_location(
        "launch_kubernetes", scripts / "launch_kubernetes.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def launcher(scripts: Path) -> ModuleType:
    return _load(scripts)


def _argv(scripts: Path) -> list[str]:
    """The kernelspec's argv after the gateway's substitutions, launcher path included."""
    argv: list[str] = json.loads((scripts.parent / "kernel.json").read_text())["argv"]
    values = {
        "{kernel_id}": KERNEL_ID,
        "{port_range}": "0..0",
        "{response_address}": "10.1.2.3:8877",
        "{public_key}": "PUBKEY",
    }
    return [values.get(arg, arg) for arg in argv]


def _args(scripts: Path, **overrides: str) -> argparse.Namespace:
    """The launcher's parsed arguments, as the chart's kernelspec gives them."""
    launcher_args = _argv(scripts)[3:]  # after python, -I and the script
    parsed: argparse.Namespace = _load(scripts).parse_args(launcher_args)
    for name, value in overrides.items():
        setattr(parsed, name, value)
    return parsed


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
    launcher.launch(_args(scripts), _gateway_env(scripts), api, scripts)
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


def _resources(launcher: ModuleType, scripts: Path, **asked: str) -> dict[str, Any]:
    api = Recorder()
    launcher.launch(_args(scripts), _gateway_env(scripts, **asked), api, scripts)
    resources: dict[str, Any] = api.created[0][1]["spec"]["containers"][0]["resources"]
    return resources


@pytest.mark.parametrize(
    "asked, size",
    [
        ({}, {"cpu": "1", "memory": "1Gi"}),  # the chart's default
        ({"KERNEL_CPUS": "500m", "KERNEL_MEMORY": "2Gi"}, {"cpu": "500m", "memory": "2Gi"}),
        ({"KERNEL_CPUS_LIMIT": "2", "KERNEL_MEMORY_LIMIT": "4Gi"}, {"cpu": "2", "memory": "4Gi"}),
        # Both names, one amount: the limit's spelling is used.
        ({"KERNEL_MEMORY": "1073741824", "KERNEL_MEMORY_LIMIT": "1Gi"}, {"memory": "1Gi"}),
        ({"KERNEL_CPUS": "0.5", "KERNEL_CPUS_LIMIT": "500m"}, {"cpu": "500m"}),
        ({"KERNEL_MEMORY": "129e6"}, {"memory": "129e6"}),
        ({"KERNEL_CPUS": "1m", "KERNEL_MEMORY": "1"}, {"cpu": "1m", "memory": "1"}),
        ({"KERNEL_CPUS": ""}, {"cpu": "1"}),  # empty is unset
    ],
)
def test_requests_always_equal_limits(
    launcher: ModuleType, scripts: Path, asked: dict[str, str], size: dict[str, str]
) -> None:
    resources = _resources(launcher, scripts, **asked)
    assert resources["requests"] == resources["limits"]
    assert size.items() <= resources["limits"].items()


@pytest.mark.parametrize(
    "asked, reason",
    [
        # The measured attack: request one byte, use 4 GiB.
        ({"KERNEL_MEMORY": "1", "KERNEL_MEMORY_LIMIT": "4Gi"}, "differ"),
        ({"KERNEL_CPUS": "100m", "KERNEL_CPUS_LIMIT": "2"}, "differ"),
        ({"KERNEL_MEMORY_LIMIT": "5Gi"}, r"above the largest kernel allowed \(4Gi\)"),
        ({"KERNEL_MEMORY": "4097Mi"}, "above the largest"),
        ({"KERNEL_CPUS": "2001m"}, r"above the largest kernel allowed \(2\)"),
        ({"KERNEL_CPUS": "1k"}, "above the largest"),
        ({"KERNEL_MEMORY": "1e999999999"}, "above the largest"),
        ({"KERNEL_MEMORY": "0"}, "every kernel has a limit"),
        ({"KERNEL_CPUS_LIMIT": "0m"}, "every kernel has a limit"),
        ({"KERNEL_MEMORY": "0.0Gi"}, "every kernel has a limit"),
        ({"KERNEL_CPUS": "0.0001"}, "below 1m CPU"),
        ({"KERNEL_MEMORY": "500m"}, "below one byte"),
        ({"KERNEL_MEMORY": "-1"}, "not a Kubernetes quantity"),
        ({"KERNEL_CPUS": "unlimited"}, "not a Kubernetes quantity"),
        ({"KERNEL_MEMORY": "1GB"}, "not a Kubernetes quantity"),
        ({"KERNEL_CPUS": "inf"}, "not a Kubernetes quantity"),
    ],
)
def test_refuses_sizes_that_escape_the_rule(
    launcher: ModuleType, scripts: Path, asked: dict[str, str], reason: str
) -> None:
    api = Recorder()
    with pytest.raises(launcher.LaunchError, match=reason) as refused:
        launcher.launch(_args(scripts), _gateway_env(scripts, **asked), api, scripts)
    assert api.created == []
    # The message names the variable the client set, so the client can fix it.
    assert any(name in str(refused.value) for name in asked)


def test_the_maximum_comes_from_the_chart_not_the_client(
    launcher: ModuleType, scripts: Path
) -> None:
    args = _args(scripts)
    data = one(render_docs(), "LimitRange")["spec"]["limits"][0]["max"]
    assert (args.max_cpu, args.max_memory) == (data["cpu"], data["memory"])
    # KERNEL_* variables never reach the arguments: the kernelspec's argv is the chart's.
    assert not [a for a in _argv(scripts) if "{" in a or a.startswith("KERNEL_")]
    # A launch that lost its maximum refuses to run rather than allow anything.
    with pytest.raises(SystemExit):
        launcher.parse_args(_argv(scripts)[3:-4])


def test_a_template_that_drifts_from_requests_equal_limits_is_refused(
    launcher: ModuleType, scripts: Path, tmp_path: Path
) -> None:
    template = (scripts / "kernel-pod.yaml.j2").read_text()
    # One more request than limits: the pod would no longer have requests equal to limits.
    drifted = re.sub(r"\n( +)requests:\n", r"\n\1requests:\n\1  ephemeral-storage: 1Gi\n", template)
    assert drifted.count("ephemeral-storage") == 1
    (tmp_path / "kernel-pod.yaml.j2").write_text(drifted)
    with pytest.raises(launcher.LaunchError, match="requests equal to its limits"):
        launcher.launch(_args(scripts), _gateway_env(scripts), Recorder(), tmp_path)


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
        launcher.launch(_args(scripts), _gateway_env(scripts, **{variable: value}), api, scripts)
    assert api.created == []


def test_refuses_a_malformed_kernel_id(launcher: ModuleType, scripts: Path) -> None:
    with pytest.raises(launcher.LaunchError):
        launcher.launch(
            _args(scripts, kernel_id="../../x"), _gateway_env(scripts), Recorder(), scripts
        )


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
    launcher.launch(_args(scripts), _gateway_env(scripts), api, scripts)
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
    launcher.launch(_args(scripts), _gateway_env(scripts), api, scripts)
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
        launcher.launch(_args(scripts), _gateway_env(scripts), api, scripts)


def test_command_line_failure_is_one_line_without_the_environment(scripts: Path) -> None:
    # Outside a pod: no service account. The gateway's log gets one line and no secret.
    # The kernelspec's own command line, with this interpreter and the test's copy of the script.
    argv = [sys.executable, "-I", str(scripts / "launch_kubernetes.py"), *_argv(scripts)[3:]]
    result = subprocess.run(
        argv,
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
