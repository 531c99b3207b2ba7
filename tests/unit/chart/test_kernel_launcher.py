"""The Kubernetes kernel launcher (``sandbox_gateway.launchers.kubernetes``), run with the chart's
kernelspec as the gateway would run it.

The kernelspec and the pod template are taken from the rendered kernelspec ConfigMap and laid out
as the gateway's volume mounts them; the pod goes to an HTTPS server that checks what the API
server would receive (path, bearer token, body).
"""

from __future__ import annotations

import argparse
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
from typing import Any

import pytest
from chart_testlib import NAMESPACE, one, render_docs

from sandbox_gateway.admission import limits
from sandbox_gateway.launchers import kubernetes as launcher
from sandbox_gateway.launchers import rules

pytestmark = pytest.mark.unit

MODULE = "sandbox_gateway.launchers.kubernetes"
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
    (directory / "kernel-pod.yaml.j2").write_text(data["kernel-pod.yaml.j2"])
    (directory.parent / "kernel.json").write_text(data["python3.kernel.json"])
    return directory


def _argv(scripts: Path) -> list[str]:
    """The kernelspec's argv after the gateway's substitutions, with the test's copy of the pod
    template where the gateway mounts it."""
    argv: list[str] = json.loads((scripts.parent / "kernel.json").read_text())["argv"]
    mounted = f"/opt/sandbox/share/jupyter/kernels/{scripts.parent.name}/scripts/kernel-pod.yaml.j2"
    values = {
        "{kernel_id}": KERNEL_ID,
        "{port_range}": "0..0",
        "{response_address}": "10.1.2.3:8877",
        "{public_key}": "PUBKEY",
        mounted: str(scripts / "kernel-pod.yaml.j2"),
    }
    assert argv[:4] == ["/opt/eg/bin/python", "-I", "-m", MODULE] and mounted in argv
    return [values.get(arg, arg) for arg in argv]


def _args(scripts: Path, **overrides: str) -> argparse.Namespace:
    """The launcher's parsed arguments, as the chart's kernelspec gives them."""
    parsed = launcher.parse_args(_argv(scripts)[4:])  # after python, -I, -m and the module
    for name, value in overrides.items():
        setattr(parsed, name, value)
    return parsed


def _template(scripts: Path) -> str:
    """The pod template the launcher reads from ``--pod-template``."""
    return launcher.read_template(_args(scripts).pod_template)


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


def test_creates_the_hardened_pod_with_an_allowlisted_environment(scripts: Path) -> None:
    api = Recorder()
    asked = {"KERNEL_PROJECT": "demo", "KERNEL_UID": "0", "KERNEL_IMAGE": "evil/image:1"}
    launcher.launch(_args(scripts), _gateway_env(scripts, **asked), api, _template(scripts))
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
    assert env["KERNEL_PROJECT"] == "demo"  # a client's own KERNEL_* variable
    for leaked in (
        "EG_AUTH_TOKEN",
        "HOME",
        "KUBERNETES_SERVICE_HOST",
        "UNLISTED",
        "SANDBOX_CLIENT_ENVS",
        # What steers the launch stays out of the kernel, as on Docker (launchers.rules).
        "KERNEL_NAMESPACE",
        "KERNEL_UID",
        "KERNEL_IMAGE",
    ):
        assert leaked not in env
    assert SECRET not in json.dumps(pod)
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def _resources(scripts: Path, **asked: str) -> dict[str, Any]:
    api = Recorder()
    launcher.launch(_args(scripts), _gateway_env(scripts, **asked), api, _template(scripts))
    resources: dict[str, Any] = api.created[0][1]["spec"]["containers"][0]["resources"]
    return resources


def _refusal(scripts: Path, template: str | None = None, **asked: str) -> str:
    """Why the launch is refused (one line); it creates nothing."""
    api = Recorder()
    with pytest.raises(launcher.LaunchError) as refused:
        launcher.launch(
            _args(scripts), _gateway_env(scripts, **asked), api, template or _template(scripts)
        )
    assert api.created == []
    assert "\n" not in str(refused.value)
    return str(refused.value)


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
        # Binary kilo is "Ki" (decimal "k"), as Kubernetes writes them.
        ({"KERNEL_MEMORY": "262144Ki"}, {"memory": "262144Ki"}),
        ({"KERNEL_CPUS": "1m", "KERNEL_MEMORY": "1"}, {"cpu": "1m", "memory": "1"}),
        ({"KERNEL_CPUS": ""}, {"cpu": "1"}),  # empty is unset
    ],
)
def test_requests_always_equal_limits(
    scripts: Path, asked: dict[str, str], size: dict[str, str]
) -> None:
    resources = _resources(scripts, **asked)
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
        # "ki" is no suffix of Kubernetes': it was once read as no suffix at all (one byte).
        ({"KERNEL_MEMORY": "262144ki"}, "not a Kubernetes quantity"),
        ({"KERNEL_CPUS": "inf"}, "not a Kubernetes quantity"),
    ],
)
def test_refuses_sizes_that_escape_the_rule(
    scripts: Path, asked: dict[str, str], reason: str
) -> None:
    refusal = _refusal(scripts, **asked)
    assert re.search(reason, refusal)
    # The message names the variable the client set, so the client can fix it.
    assert any(name in refusal for name in asked)


def test_the_maximum_comes_from_the_chart_not_the_client(scripts: Path) -> None:
    args = _args(scripts)
    data = one(render_docs(), "LimitRange")["spec"]["limits"][0]["max"]
    assert (args.max_cpu, args.max_memory) == (data["cpu"], data["memory"])
    # KERNEL_* variables never reach the arguments: the kernelspec's argv is the chart's.
    assert not [a for a in _argv(scripts) if "{" in a or a.startswith("KERNEL_")]
    # A launch that lost its maximum refuses to run rather than allow anything.
    with pytest.raises(SystemExit):
        launcher.parse_args(_argv(scripts)[4:-4])


def test_a_template_that_drifts_from_requests_equal_limits_is_refused(scripts: Path) -> None:
    # One more request than limits: the pod would no longer have requests equal to limits.
    drifted = re.sub(
        r"\n( +)requests:\n", r"\n\1requests:\n\1  ephemeral-storage: 1Gi\n", _template(scripts)
    )
    assert drifted.count("ephemeral-storage") == 1
    with pytest.raises(launcher.LaunchError, match="requests equal to its limits"):
        launcher.launch(_args(scripts), _gateway_env(scripts), Recorder(), drifted)


@pytest.mark.parametrize(
    "template, reason",
    [
        ("kind: Pod\nmetadata: {{ broken", "the pod template is invalid: "),
        ("kind: Pod\n  bad: [indent", "the pod template is invalid: "),
        ("- kind: Pod", "exactly one Pod"),
        ("kind: ConfigMap", "exactly one Pod"),
        ("kind: Pod\n---\nkind: Pod", "exactly one Pod"),
    ],
)
def test_a_template_that_is_no_pod_is_refused_in_one_line(
    scripts: Path, template: str, reason: str
) -> None:
    assert reason in _refusal(scripts, template)


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
    scripts: Path, variable: str, value: str
) -> None:
    _refusal(scripts, **{variable: value})


def test_refuses_a_malformed_kernel_id(scripts: Path) -> None:
    with pytest.raises(launcher.LaunchError):
        launcher.launch(
            _args(scripts, kernel_id="../../x"),
            _gateway_env(scripts),
            Recorder(),
            _template(scripts),
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
    scripts: Path, tls: Path, api_server: FakeAPIServer
) -> None:
    api = launcher.InClusterAPI(sa_dir=tls)
    launcher.launch(_args(scripts), _gateway_env(scripts), api, _template(scripts))
    (request,) = api_server.requests
    assert request["path"] == f"/api/v1/namespaces/{KERNEL_NS}/pods"
    assert request["authorization"] == "Bearer sa-token-123"
    assert request["body"]["kind"] == "Pod"
    assert request["body"]["metadata"]["labels"]["component"] == "kernel"


def test_an_existing_pod_is_accepted_and_a_refusal_is_reported(
    scripts: Path, tls: Path, api_server: FakeAPIServer
) -> None:
    api = launcher.InClusterAPI(sa_dir=tls)
    # EG retrying a start with the same kernel id: the pod is there already, which is fine.
    api_server.answers.append(
        (409, {"kind": "Status", "reason": "AlreadyExists", "message": 'pods "x" already exists'})
    )
    launcher.launch(_args(scripts), _gateway_env(scripts), api, _template(scripts))
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
        launcher.launch(_args(scripts), _gateway_env(scripts), api, _template(scripts))


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """The kernelspec's own command line, with this interpreter (it has the package installed)."""
    return subprocess.run(
        [sys.executable, *argv[1:]],
        env={
            "EG_AUTH_TOKEN": SECRET,
            "KERNEL_POD_NAME": f"jovyan-{KERNEL_ID}",
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_command_line_failure_is_one_line_without_the_environment(scripts: Path) -> None:
    # Outside a pod: no service account. The gateway's log gets one line and no secret.
    result = _run(_argv(scripts))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "KUBERNETES_SERVICE_HOST" in result.stderr
    assert SECRET not in result.stderr + result.stdout


@pytest.mark.parametrize(
    "template, reason",
    [
        ("missing", "No such file or directory"),
        ("directory", "Is a directory"),
        ("binary", "it is not UTF-8 text"),
    ],
)
def test_a_pod_template_that_cannot_be_read_is_one_line(
    scripts: Path, tmp_path: Path, template: str, reason: str
) -> None:
    path = tmp_path / template
    if template == "directory":
        path.mkdir()
    elif template == "binary":
        path.write_bytes(b"kind: Pod\n\xff\xfe")
    argv = _argv(scripts)
    argv[argv.index("--pod-template") + 1] = str(path)
    result = _run(argv)
    assert result.returncode == 1
    assert result.stderr == (
        f"launch_kubernetes: kernel {KERNEL_ID}: cannot read the pod template {path}: {reason}\n"
    )


def test_a_kernelspec_without_a_pod_template_is_refused(scripts: Path) -> None:
    argv = _argv(scripts)
    at = argv.index("--pod-template")
    result = _run(argv[:at] + argv[at + 2 :])
    assert result.returncode == 2 and "--pod-template" in result.stderr


@pytest.mark.parametrize(
    "asked",
    [{"KERNEL_CPUS": "3"}, {"KERNEL_MEMORY": "262144ki"}, {"KERNEL_MEMORY": "0"}],
)
def test_the_gateway_refuses_before_the_launch_what_the_launcher_would(
    scripts: Path, asked: dict[str, str]
) -> None:
    # The same words, from the chart's own kernelspec: the gateway answers them with a 403
    # instead of launching and answering the launcher's refusal with a 500.
    assert limits.launch_refusal(_argv(scripts), asked, {}) == _refusal(scripts, **asked)


@pytest.mark.parametrize("asked", [{}, {"KERNEL_CPUS": "500m", "KERNEL_MEMORY": "2Gi"}])
def test_the_gateway_lets_through_what_the_launcher_takes(
    scripts: Path, asked: dict[str, str]
) -> None:
    assert limits.launch_refusal(_argv(scripts), asked, {}) is None


@pytest.fixture(scope="module")
def egress_scripts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """As ``scripts``, from a render with egress allow-lists on."""
    values = {"kernels": {"egress": {"allow": ["pypi.org"]}}}
    data = one(render_docs(values), "ConfigMap", "-kernelspecs")["data"]
    directory = tmp_path_factory.mktemp("kernelspecs") / "python3" / "scripts"
    directory.mkdir(parents=True)
    (directory / "kernel-pod.yaml.j2").write_text(data["kernel-pod.yaml.j2"])
    (directory.parent / "kernel.json").write_text(data["python3.kernel.json"])
    return directory


@pytest.mark.parametrize(
    "service, address", [("10.96.0.77", "10.96.0.77"), ("localhost", "127.0.0.1")]
)
def test_with_egress_the_kernel_s_dns_and_proxy_are_the_egress_service(
    egress_scripts: Path, service: str, address: str
) -> None:
    assert _args(egress_scripts).egress_service == "demo-mini-jupyter-sandbox-egress.sandbox.svc"
    api = Recorder()
    # The chart's Service name resolves only in the cluster: here an address, or a name that
    # resolves anywhere.
    args = _args(egress_scripts, egress_service=service)
    launcher.launch(args, _gateway_env(egress_scripts), api, _template(egress_scripts))
    ((_, pod),) = api.created
    assert pod["spec"]["dnsPolicy"] == "None"
    assert pod["spec"]["dnsConfig"]["nameservers"] == [address]
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    for name, value in rules.egress_variables(address).items():
        assert env[name] == value
    assert env["HTTPS_PROXY"] == f"http://{address}:3128"


def test_the_egress_variables_win_over_a_client_s(egress_scripts: Path) -> None:
    api = Recorder()
    args = _args(egress_scripts, egress_service="10.96.0.77")
    env = _gateway_env(egress_scripts, KERNEL_HTTPS_PROXY="http://evil:3128")
    gateway_env = {**env, "SANDBOX_CLIENT_ENVS": "HTTPS_PROXY", "HTTPS_PROXY": "http://evil:1"}
    launcher.launch(args, gateway_env, api, _template(egress_scripts))
    pod_env = {e["name"]: e["value"] for e in api.created[0][1]["spec"]["containers"][0]["env"]}
    assert pod_env["HTTPS_PROXY"] == "http://10.96.0.77:3128"


def test_an_egress_service_that_does_not_resolve_refuses_the_launch(egress_scripts: Path) -> None:
    api = Recorder()
    args = _args(egress_scripts, egress_service="egress.nowhere.invalid")
    with pytest.raises(launcher.LaunchError, match="cannot resolve the egress Service") as refused:
        launcher.launch(args, _gateway_env(egress_scripts), api, _template(egress_scripts))
    assert api.created == [] and "\n" not in str(refused.value)


def test_the_pod_runs_the_kernelspecs_image_and_nothing_else(scripts: Path) -> None:
    pod = launcher.launch(_args(scripts), _gateway_env(scripts), Recorder(), _template(scripts))
    assert pod["spec"]["containers"][0]["image"] == "mini-jupyter-sandbox/kernel-python:0.1.0"
    # A client's KERNEL_IMAGE changes nothing: the image is the kernelspec's argv.
    env = {**_gateway_env(scripts), "KERNEL_IMAGE": "evil/miner:latest"}
    pod = launcher.launch(_args(scripts), env, Recorder(), _template(scripts))
    assert pod["spec"]["containers"][0]["image"] == "mini-jupyter-sandbox/kernel-python:0.1.0"


@pytest.mark.parametrize("image", ["", "evil image", 'x"\nhostNetwork: true', "UPPER/case"])
def test_a_malformed_image_in_the_argv_is_refused(scripts: Path, image: str) -> None:
    recorder = Recorder()
    with pytest.raises(launcher.LaunchError, match="invalid --image"):
        launcher.launch(
            _args(scripts, image=image), _gateway_env(scripts), recorder, _template(scripts)
        )
    assert recorder.created == []
