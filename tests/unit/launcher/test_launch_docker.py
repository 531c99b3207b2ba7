"""The project's kernel launcher: what reaches the kernel container, and its hardening."""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import itertools
import json
import socketserver
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox_gateway.admission import limits
from sandbox_gateway.launchers import docker as launch_docker

REPO = Path(__file__).resolve().parents[3]

GATEWAY_ENV = {
    "PATH": "/opt/eg/bin:/usr/bin",
    "SANDBOX_GATEWAY_CONTAINER": "gw0123",
    "SANDBOX_DEPLOYMENT": "stack",
    "EG_DOCKER_MODE": "docker",
    "EG_AUTH_TOKEN": "gateway-secret",
    "AWS_SECRET_ACCESS_KEY": "cloud-secret",
    "SANDBOX_SHARED_VOLUME": "shared-vol",
    "KERNEL_USERNAME": "alice",
    "KERNEL_ID": "k-1",
    "KERNEL_IMAGE": "mini-jupyter-sandbox/kernel-python:0.1.0",
    "KERNEL_UID": "0",
    "KERNEL_WORKING_DIR": "/",
    "KERNEL_EXTRA_SETTING": "client value",
}


def _kernel_env(env: dict[str, str]) -> dict[str, str]:
    return dict(
        launch_docker.kernel_environment(
            env,
            kernel_id="k-1",
            port_range="0..0",
            response_address="sandbox-gateway:8877",
            public_key="PUBKEY",
            kernel_class_name=None,
            transport_encryption=None,
        )
    )


def test_kernel_gets_only_what_it_needs() -> None:
    env = _kernel_env(GATEWAY_ENV)
    assert env == {
        "KERNEL_ID": "k-1",
        "KERNEL_USERNAME": "alice",
        "KERNEL_EXTRA_SETTING": "client value",
        "KERNEL_WORKING_DIR": "/",  # the bootstrap starts the kernel there if it exists
        "PORT_RANGE": "0..0",
        "RESPONSE_ADDRESS": "sandbox-gateway:8877",
        "PUBLIC_KEY": "PUBKEY",
        "KERNEL_SPARK_CONTEXT_INIT_MODE": "none",
    }


def test_the_kernelspec_s_client_variables_reach_a_cold_kernel_as_a_warm_one() -> None:
    # The pool's claim passes SANDBOX_CLIENT_ENVS' names (pool.rules.kernel_variables): a cold
    # start must give the same, and nothing the list does not name.
    env = {**GATEWAY_ENV, "SANDBOX_CLIENT_ENVS": "PROJECT_NAME", "PROJECT_NAME": "demo"}
    kernel_env = _kernel_env({**env, "UNLISTED": "x"})
    assert kernel_env["PROJECT_NAME"] == "demo"
    assert "UNLISTED" not in kernel_env and "SANDBOX_CLIENT_ENVS" not in kernel_env


def _spec(env: dict[str, str], kernel_id: str = "k-1") -> dict[str, Any]:
    settings = launch_docker.Settings.from_env(env)
    return dict(
        launch_docker.container_spec(
            settings,
            kernel_id=kernel_id,
            image="img",
            kernel_env=_kernel_env(env),
            network=launch_docker.network_name(kernel_id),
            username="alice",
        )
    )


def test_container_is_hardened() -> None:
    spec = _spec(GATEWAY_ENV)
    host = spec["HostConfig"]
    assert spec["User"] == "1000:100"  # KERNEL_UID=0 from the client is ignored
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["ReadonlyRootfs"] is True
    assert set(host["Tmpfs"]) == {"/tmp", "/home/jovyan"}
    assert host["PidsLimit"] == 256
    assert host["Memory"] == host["MemorySwap"] == 512 * 1024**2
    assert host["NanoCpus"] == 1_000_000_000
    assert host["OomScoreAdj"] == 1000  # the OOM killer's first choice, never a service
    assert host["NetworkMode"] == "mini-jupyter-sandbox-kernel-k-1"
    assert list(spec["NetworkingConfig"]["EndpointsConfig"]) == [host["NetworkMode"]]
    assert host["Sysctls"] == {"net.ipv6.conf.all.disable_ipv6": "1"}
    assert host["Mounts"] == [{"Type": "volume", "Source": "shared-vol", "Target": "/data/shared"}]
    assert spec["Labels"]["kernel_id"] == "k-1"
    assert spec["Labels"]["mini-jupyter-sandbox.deployment"] == "stack"
    assert spec["WorkingDir"] == "/home/jovyan"
    assert not any("docker.sock" in str(value) for value in host.values())


def test_kernel_network_is_internal_with_no_host_address() -> None:
    settings = launch_docker.Settings.from_env(GATEWAY_ENV)
    spec = launch_docker.network_spec(settings, kernel_id="k-1", subnet="10.213.4.16/28")
    assert spec["Internal"] is True
    assert spec["Attachable"] is False
    assert spec["Options"] == {"com.docker.network.bridge.inhibit_ipv4": "true"}
    assert spec["IPAM"]["Config"] == [{"Subnet": "10.213.4.16/28"}]
    assert spec["Labels"]["kernel_id"] == "k-1"


def test_limits_come_from_the_gateway_environment() -> None:
    env = {
        **GATEWAY_ENV,
        "SANDBOX_KERNEL_MEMORY": "1g",
        "SANDBOX_KERNEL_CPUS": "0.5",
        "SANDBOX_KERNEL_PIDS": "64",
        "SANDBOX_REMOVE_CONTAINER": "false",
    }
    host = _spec(env)["HostConfig"]
    assert host["Memory"] == 1024**3
    assert host["NanoCpus"] == 500_000_000
    assert host["PidsLimit"] == 64
    assert host["AutoRemove"] is False


@pytest.mark.parametrize(
    ("name", "value"),
    [
        # Docker reads each of these as "unlimited".
        ("SANDBOX_KERNEL_MEMORY", "0"),
        ("SANDBOX_KERNEL_CPUS", "0"),
        ("SANDBOX_KERNEL_PIDS", "-1"),
        ("SANDBOX_KERNEL_PIDS", "0"),
        # Nonsense that would otherwise reach Docker or a mount option.
        ("SANDBOX_KERNEL_MEMORY", "1m"),
        ("SANDBOX_KERNEL_MEMORY", "lots"),
        ("SANDBOX_KERNEL_CPUS", "-2"),
        ("SANDBOX_KERNEL_CPUS", "nan"),
        ("SANDBOX_KERNEL_CPUS", "inf"),
        ("SANDBOX_KERNEL_PIDS", "many"),
        ("SANDBOX_KERNEL_TMP_SIZE", "0"),
        ("SANDBOX_KERNEL_TMP_SIZE", "64m,exec"),
        ("SANDBOX_KERNEL_USER", "0"),
        ("SANDBOX_KERNEL_USER", "0:0"),
        ("SANDBOX_KERNEL_USER", "root"),
        ("SANDBOX_KERNEL_USER", "1000:abc"),
        ("SANDBOX_REMOVE_CONTAINER", "maybe"),
        ("SANDBOX_KERNEL_SUBNETS", "not-a-network"),
        ("SANDBOX_KERNEL_SUBNETS", "10.213.0.0/30"),
        ("SANDBOX_GATEWAY_CONTAINER", ""),
        ("SANDBOX_DEPLOYMENT", "a/b"),
    ],
)
def test_settings_fail_closed(name: str, value: str) -> None:
    with pytest.raises(launch_docker.LaunchError, match=name):
        launch_docker.Settings.from_env({**GATEWAY_ENV, name: value})


def test_missing_gateway_identity_is_refused() -> None:
    env = {k: v for k, v in GATEWAY_ENV.items() if k != "SANDBOX_GATEWAY_CONTAINER"}
    with pytest.raises(launch_docker.LaunchError, match="SANDBOX_GATEWAY_CONTAINER"):
        launch_docker.Settings.from_env(env)


def test_client_username_cannot_inject_into_the_container_name() -> None:
    env = {**GATEWAY_ENV, "KERNEL_USERNAME": "../evil name;rm -rf"}
    name = launch_docker.container_name(env, "k-1")
    assert name.endswith("-k-1")
    assert all(ch.isalnum() or ch in "_.-" for ch in name)


ARGV = [
    "--kernel-id",
    "0f6e7c2a-1b2c-4d5e-8f90-123456789abc",
    "--response-address",
    "sandbox-gateway:8877",
    "--public-key",
    "K",
    "--image",
    "mini-jupyter-sandbox/kernel-python:0.1.0",
]


class FakeEngine:
    """A stand-in for the Docker Engine API on a unix socket (the real engine is exercised by
    tests/e2e/docker/test_launcher_docker.py and the rest of the Docker e2e suite); it records
    every call and answers as Docker does: names unique, networks addressed by name or id."""

    def __init__(self, socket_path: Path) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.networks: dict[str, dict[str, Any]] = {}  # by id
        self.containers: dict[str, dict[str, Any]] = {}  # by id, as GET /containers/json lists
        self.fail: dict[str, tuple[int, str]] = {}
        self.taken = {ipaddress.ip_network("10.213.0.0/17")}  # another network's range
        self.on_create: Any = None  # called once the launcher's container exists
        self.refuse_connect = ""  # a container that cannot join any network
        self._ids = itertools.count(1)
        engine = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                status, reply = engine.handle(self.command, self.path, body)
                raw = json.dumps(reply).encode() if reply is not None else b""
                self.send_response(status)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                # The launcher may have closed the connection already.
                with contextlib.suppress(BrokenPipeError):
                    self.wfile.write(raw)

            do_GET = do_POST = do_DELETE = _answer

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

            def get_request(self) -> Any:
                request, _ = super().get_request()
                return request, ("local", 0)

        self.server = Server(str(socket_path), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def network(self, ref: str) -> dict[str, Any] | None:
        return self.networks.get(ref) or next(
            (net for net in self.networks.values() if net["Name"] == ref), None
        )

    def add_network(self, name: str, kernel_id: str) -> str:
        """A network that some other launch (or an earlier kernel) made."""
        net_id = f"n{next(self._ids):063d}"
        self.networks[net_id] = {"Name": name, "Id": net_id, "Labels": {"kernel_id": kernel_id}}
        return net_id

    def add_container(self, kernel_id: str, state: str) -> str:
        container_id = f"x{next(self._ids):063d}"
        self.containers[container_id] = {
            "Id": container_id,
            "State": state,
            "Labels": {"kernel_id": kernel_id},
        }
        return container_id

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        path = path.removeprefix("/v1.41")
        route, _, query = path.partition("?")
        self.calls.append((method, route, body))
        for pattern, answer in self.fail.items():
            # "/prefix..." or "*suffix" (a path that holds an id the launcher got from us)
            if path.startswith(pattern) or (pattern[:1] == "*" and route.endswith(pattern[1:])):
                return answer[0], {"message": answer[1]}
        parts = route.split("/")
        if route == "/networks/create":
            if self.network(body["Name"]):
                return 409, {"message": f"network with name {body['Name']} already exists"}
            subnet = ipaddress.ip_network(body["IPAM"]["Config"][0]["Subnet"])
            if any(subnet.overlaps(other) for other in self.taken):
                return 403, {"message": "Pool overlaps with other one on this address space"}
            self.taken.add(subnet)
            net_id = f"n{next(self._ids):063d}"
            self.networks[net_id] = {**body, "Id": net_id}
            return 201, {"Id": net_id}
        if route.startswith("/networks/"):
            network = self.network(parts[2])
            if network is None:
                return 404, {"message": f"network {parts[2]} not found"}
            if method == "GET":
                return 200, network
            if method == "DELETE":
                del self.networks[network["Id"]]
                return 204, None
            if route.endswith("/connect") and body["Container"] == self.refuse_connect:
                return 404, {"message": f"No such container: {self.refuse_connect}"}
            return 200, None  # connect, disconnect
        if route == "/containers/json":
            wanted = json.loads(urllib.parse.parse_qs(query)["filters"][0])["label"]
            return 200, [
                item
                for item in self.containers.values()
                if set(wanted) <= {f"{k}={v}" for k, v in item["Labels"].items()}
            ]
        if route == "/containers/create":
            if self.network(body["HostConfig"]["NetworkMode"]) is None:
                return 404, {"message": "network not found"}
            container_id = "c" * 64
            self.containers[container_id] = {
                "Id": container_id,
                "State": "created",
                "Labels": body["Labels"],
            }
            if self.on_create is not None:
                self.on_create()
            return 201, {"Id": container_id}
        if route.endswith("/start"):
            self.containers[parts[2]]["State"] = "running"
            return 204, None
        if method == "DELETE" and route.startswith("/containers/"):
            self.containers.pop(parts[2], None)
            return 204, None
        return 404, {"message": f"unexpected {method} {path}"}


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[FakeEngine]:
    fake = FakeEngine(tmp_path / "docker.sock")
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def _env(engine: FakeEngine) -> dict[str, str]:
    env = {k: v for k, v in GATEWAY_ENV.items() if k != "KERNEL_IMAGE"}
    return {**env, "SANDBOX_DOCKER_SOCKET": engine.server.server_address}  # type: ignore[dict-item]


NETWORK = "mini-jupyter-sandbox-kernel-0f6e7c2a-1b2c-4d5e-8f90-123456789abc"
KERNEL_ID = ARGV[1]


def _calls(engine: FakeEngine) -> list[tuple[str, str]]:
    return [(method, path) for method, path, _ in engine.calls]


def _own_network(engine: FakeEngine) -> dict[str, Any]:
    (network,) = (net for net in engine.networks.values() if net["Name"] == NETWORK)
    return network


def test_launch_creates_a_private_network_attaches_the_gateway_and_starts_the_kernel(
    engine: FakeEngine,
) -> None:
    assert launch_docker.main(ARGV, _env(engine)) == 0
    calls = _calls(engine)
    network = _own_network(engine)
    # No container of that kernel may exist yet; then the network comes first (subnets that
    # overlap another network are retried: the fake holds half of the pool).
    assert calls[0] == ("GET", "/containers/json")
    created = max(i for i, call in enumerate(calls) if call == ("POST", "/networks/create"))
    assert set(calls[1 : created + 1]) == {("POST", "/networks/create")}
    # Attaching the gateway overlaps with creating the container, whose kernel id is checked
    # again once it exists; the container starts only once the gateway is attached.
    rest = calls[created + 1 :]
    assert sorted(rest[:3]) == sorted(
        [
            ("POST", f"/networks/{network['Id']}/connect"),
            ("POST", "/containers/create"),
            ("GET", "/containers/json"),
        ]
    )
    assert rest.index(("POST", "/containers/create")) < rest.index(("GET", "/containers/json"))
    assert rest[3:] == [("POST", f"/containers/{'c' * 64}/start")]
    subnet = ipaddress.ip_network(network["IPAM"]["Config"][0]["Subnet"])
    assert subnet.prefixlen == 28 and subnet.subnet_of(ipaddress.ip_network("10.213.0.0/16"))
    connect = next(body for method, path, body in engine.calls if path.endswith("/connect"))
    assert connect == {"Container": "gw0123", "EndpointConfig": {"Aliases": ["sandbox-gateway"]}}
    container = next(body for _, path, body in engine.calls if path == "/containers/create")
    # By the id of the network this launch created, not by a name anyone could hold.
    assert container["HostConfig"]["NetworkMode"] == network["Id"]
    assert list(container["NetworkingConfig"]["EndpointsConfig"]) == [network["Id"]]


def test_a_failed_container_start_removes_the_network(engine: FakeEngine) -> None:
    engine.fail["/containers/create"] = (500, "no space left")
    assert launch_docker.main(ARGV, _env(engine)) == 1
    assert engine.networks == {}
    assert any(path.endswith("/disconnect") for _, path, _ in engine.calls)


def test_no_network_means_no_kernel_and_never_bridge(
    engine: FakeEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    engine.fail["/networks/create"] = (500, "failed to allocate")
    assert launch_docker.main(ARGV, _env(engine)) == 1
    assert "cannot create network" in capsys.readouterr().err
    assert not any(path.startswith("/containers/create") for _, path, _ in engine.calls)


def test_gateway_that_cannot_attach_refuses_the_launch(engine: FakeEngine) -> None:
    engine.fail["*/connect"] = (404, "No such container: gw0123")
    assert launch_docker.main(ARGV, _env(engine)) == 1
    calls = _calls(engine)
    # The kernel never starts; a container created meanwhile is removed, and so is the network.
    assert not any(path.endswith("/start") for _, path in calls)
    if ("POST", "/containers/create") in calls:
        assert ("DELETE", f"/containers/{'c' * 64}") in calls
    assert engine.networks == {}
    assert engine.containers == {}


# --- one launch, one kernel, one network: a second start with the same id joins nothing ---------


def test_an_existing_network_of_that_name_is_never_joined_nor_removed(
    engine: FakeEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another start of this kernel id created it a moment ago (its container does not exist
    yet), or the kernel's previous network is still there: either way it is not this launch's."""
    theirs = engine.add_network(NETWORK, KERNEL_ID)
    assert launch_docker.main(ARGV, _env(engine)) == 1
    assert "already exists" in capsys.readouterr().err
    calls = _calls(engine)
    assert not any(path.endswith(("/connect", "/disconnect")) for _, path in calls)
    assert not any(path.startswith("/containers/create") for _, path in calls)
    assert not any(method == "DELETE" for method, _ in calls)
    assert list(engine.networks) == [theirs]


@pytest.mark.parametrize("state", ["created", "running", "restarting", "paused"])
def test_a_live_container_of_that_kernel_refuses_the_launch_before_anything_is_made(
    engine: FakeEngine, capsys: pytest.CaptureFixture[str], state: str
) -> None:
    theirs = engine.add_container(KERNEL_ID, state)
    assert launch_docker.main(ARGV, _env(engine)) == 1
    assert f"already has a container: {theirs[:12]} ({state})" in capsys.readouterr().err
    assert _calls(engine) == [("GET", "/containers/json")]
    assert list(engine.containers) == [theirs]


@pytest.mark.parametrize("state", ["exited", "dead", "removing"])
def test_a_previous_kernel_s_remains_do_not_block_its_restart(
    engine: FakeEngine, state: str
) -> None:
    """A restart follows the old container's removal; one that exited and is being removed by
    Docker (AutoRemove), or kept (SANDBOX_REMOVE_CONTAINER=false), is on no network any more."""
    engine.add_container(KERNEL_ID, state)
    assert launch_docker.main(ARGV, _env(engine)) == 0
    assert engine.containers["c" * 64]["State"] == "running"


def test_other_kernels_containers_do_not_block_the_launch(engine: FakeEngine) -> None:
    engine.add_container("another-kernel", "running")
    assert launch_docker.main(ARGV, _env(engine)) == 0


def test_a_concurrent_launch_seen_after_create_removes_only_this_launch_s_own(
    engine: FakeEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two starts of one id that both found nothing: the one that sees the other's container
    once its own exists refuses, and takes away its own container and network, nothing else."""
    theirs: list[str] = []
    engine.on_create = lambda: theirs.append(engine.add_container(KERNEL_ID, "created"))
    assert launch_docker.main(ARGV, _env(engine)) == 1
    assert "already has a container" in capsys.readouterr().err
    assert list(engine.containers) == theirs
    assert engine.networks == {}
    assert not any(path.endswith("/start") for _, path in _calls(engine))


def test_image_not_allowed_is_refused_before_docker_is_touched(
    engine: FakeEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {**_env(engine), "KERNEL_IMAGE": "alpine:latest"}
    assert launch_docker.main(ARGV, env) == 1
    assert "not allowed" in capsys.readouterr().err
    assert engine.calls == []


def test_swarm_mode_is_refused(engine: FakeEngine) -> None:
    env = {**_env(engine), "EG_DOCKER_MODE": "swarm"}
    assert launch_docker.main(ARGV, env) == 1
    assert engine.calls == []


@pytest.mark.parametrize("kernel_id", ["../../x", "k-1", "0f6e7c2a" * 8])
def test_a_malformed_kernel_id_is_refused_before_docker_is_touched(
    engine: FakeEngine, capsys: pytest.CaptureFixture[str], kernel_id: str
) -> None:
    argv = [kernel_id if arg == KERNEL_ID else arg for arg in ARGV]
    assert launch_docker.main(argv, _env(engine)) == 1
    assert f"invalid kernel id {kernel_id!r}" in capsys.readouterr().err
    assert engine.calls == []


def test_the_gateway_refuses_before_the_launch_an_image_the_launcher_would() -> None:
    argv = json.loads((REPO / "kernels" / "python3" / "kernel.json").read_text())["argv"]
    image = argv[argv.index("--image") + 1]
    refused = limits.launch_refusal(argv, {"KERNEL_IMAGE": "alpine:latest"}, {})
    assert refused is not None and "'alpine:latest' is not allowed" in refused
    assert limits.launch_refusal(argv, {"KERNEL_IMAGE": image}, {}) is None
    assert limits.launch_refusal(argv, {}, {}) is None
    listed = {"SANDBOX_ALLOWED_KERNEL_IMAGES": "alpine:latest"}
    assert limits.launch_refusal(argv, {"KERNEL_IMAGE": "alpine:latest"}, listed) is None


def test_with_egress_on_the_egress_container_joins_at_the_last_address_and_the_kernel_uses_it(
    engine: FakeEngine,
) -> None:
    env = {**_env(engine), "SANDBOX_EGRESS_CONTAINER": "stack_egress_1"}
    assert launch_docker.main(ARGV, env) == 0
    network = _own_network(engine)
    subnet = ipaddress.ip_network(network["IPAM"]["Config"][0]["Subnet"])
    egress = str(subnet[-2])
    connects = [body for _, path, body in engine.calls if path.endswith("/connect")]
    assert {
        "Container": "stack_egress_1",
        "EndpointConfig": {"IPAMConfig": {"IPv4Address": egress}},
    } in connects
    container = next(body for _, path, body in engine.calls if path == "/containers/create")
    assert container["HostConfig"]["Dns"] == [egress]
    assert {
        "Type": "volume",
        "Source": "mini-jupyter-sandbox-egress-ca",
        "Target": "/etc/sandbox-egress",
        "ReadOnly": True,
    } in container["HostConfig"]["Mounts"]
    kernel_env = dict(item.split("=", 1) for item in container["Env"])
    assert kernel_env["HTTPS_PROXY"] == kernel_env["http_proxy"] == f"http://{egress}:3128"
    assert kernel_env["SSL_CERT_FILE"] == kernel_env["PIP_CERT"] == "/etc/sandbox-egress/ca.pem"


def test_with_egress_off_a_kernel_network_holds_the_kernel_and_the_gateway_alone(
    engine: FakeEngine,
) -> None:
    assert launch_docker.main(ARGV, _env(engine)) == 0
    connects = [body for _, path, body in engine.calls if path.endswith("/connect")]
    assert [body["Container"] for body in connects] == ["gw0123"]
    container = next(body for _, path, body in engine.calls if path == "/containers/create")
    assert "Dns" not in container["HostConfig"]
    assert not {"HTTPS_PROXY", "SSL_CERT_FILE"} & {item.split("=")[0] for item in container["Env"]}


def test_an_egress_container_that_cannot_join_refuses_the_launch(engine: FakeEngine) -> None:
    engine.refuse_connect = "stack_egress_1"
    env = {**_env(engine), "SANDBOX_EGRESS_CONTAINER": "stack_egress_1"}
    assert launch_docker.main(ARGV, env) == 1
    assert not any(path.endswith("/start") for _, path in _calls(engine))
    assert engine.containers == {} and engine.networks == {}
