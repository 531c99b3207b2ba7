"""The chart's NetworkPolicies, enforced (kube-router) and probed from inside real kernel pods.

A kernel that knows every address and port around it tries them all: another kernel's ports, the
gateway's API and metrics, the notebook, the file server, the API server, the kubelet, cluster
DNS, the egress process's control port and the egress test hosts (the outside world, for these
tests).  It reaches none of them; it reaches the gateway's launch-response port and the egress
process's DNS, proxy and allowed ports, which is the only DNS it has.  The same probe with the
enforcer stopped gets through everywhere, so the refusals are the policies' doing and not an
unreachable address.
"""

from __future__ import annotations

import ast
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from jupyter_kernel_client import GatewayKernelSession
from testkit.cluster import enforcer
from testkit.cluster.cluster import RELEASE_NAMESPACE, Cluster
from testkit.cluster.control_plane import API_SERVICE_IP, node_address

from .conftest import PREFIX, gateway_pod, get, kernel_pods, ready_session, service_ip

pytestmark = pytest.mark.timeout(900)

# Run inside a kernel: every TCP port it listens on for other hosts (its ZMQ ports; a socket
# bound to loopback is out of anyone else's reach anyway).
LISTENING_PORTS = """\
ports = set()
for table in ('/proc/net/tcp', '/proc/net/tcp6'):
    for line in open(table).read().splitlines()[1:]:
        fields = line.split()
        address, port = fields[1].rsplit(':', 1)
        if fields[3] == '0A' and set(address) == {'0'}:  # LISTEN on every address
            ports.add(int(port, 16))
sorted(ports)
"""


def connect_probe(targets: list[tuple[str, int]]) -> str:
    """Kernel code: a TCP connection to each target; evaluates to {"host:port": outcome}."""
    return (
        "import socket\n"
        "outcomes = {}\n"
        f"for host, port in {targets!r}:\n"
        "    try:\n"
        "        socket.create_connection((host, port), timeout=3).close()\n"
        "        outcomes[f'{host}:{port}'] = 'connected'\n"
        "    except OSError as exc:\n"
        "        outcomes[f'{host}:{port}'] = type(exc).__name__\n"
        "outcomes\n"
    )


OWN_ADDRESS = "import socket; socket.gethostbyname(socket.gethostname())"
RESOLVE_SERVICE = f"""
import socket
try:
    outcome = socket.gethostbyname('{PREFIX}-gateway.{RELEASE_NAMESPACE}.svc.cluster.local')
except OSError as exc:
    outcome = type(exc).__name__
outcome
"""


def evaluate(kernel: GatewayKernelSession, code: str) -> Any:
    return ast.literal_eval(str(kernel.execute(code, timeout=240)))


def pod_ip(cluster: Cluster, selector: str, namespace: str = RELEASE_NAMESPACE) -> str:
    (pod,) = get(cluster, "pods", "-n", namespace, "-l", selector)["items"]
    ip: str = pod["status"]["podIP"]
    return ip


def targets(cluster: Cluster, victim: dict[str, Any], victim_ports: list[int]) -> dict[str, list]:
    """What a kernel must not reach (``forbidden``) and what it must (``allowed``)."""
    gateway = gateway_pod(cluster)
    gateway_ip = gateway["status"]["podIP"]
    ports = {p["name"]: p["containerPort"] for p in gateway["spec"]["containers"][0]["ports"]}
    (victim_pod,) = kernel_pods(cluster, f"kernel_id={victim['kernelId']}")
    kubelet = yaml.safe_load((cluster.state / "kubelet.yaml").read_text())
    api = cluster.kubectl("config", "view", "-o", "jsonpath={.clusters[0].cluster.server}")
    api_host, api_port = api.removeprefix("https://").rsplit(":", 1)
    dns_ip = pod_ip(cluster, "k8s-app=kube-dns", "kube-system")
    egress = service_ip(cluster, f"{PREFIX}-egress")
    forbidden = [(victim_pod["status"]["podIP"], port) for port in victim_ports]
    forbidden += [
        (gateway_ip, ports["http"]),
        (gateway_ip, ports["metrics"]),
        (service_ip(cluster, f"{PREFIX}-gateway"), ports["http"]),
        (service_ip(cluster, f"{PREFIX}-notebook"), 8888),
        (pod_ip(cluster, "app.kubernetes.io/component=notebook"), 8888),
        (service_ip(cluster, f"{PREFIX}-fileserver"), 8080),
        (pod_ip(cluster, "app.kubernetes.io/component=fileserver"), 8080),
        (API_SERVICE_IP, 443),
        (api_host, int(api_port)),
        (kubelet["address"], kubelet["port"]),
        # Cluster DNS, every port: with egress allow-lists on, a kernel's DNS is the egress
        # process alone.
        (service_ip(cluster, "kube-dns", "kube-system"), 53),
        (dns_ip, 53),
        (dns_ip, 8080),
        (dns_ip, 8181),
        # The egress process's control port (the gateway's alone), and the egress test hosts.
        (egress, 8900),
        (pod_ip(cluster, "app.kubernetes.io/component=egress"), 8900),
        (node_address(), 443),
        (node_address(), 80),
    ]
    # The egress process: its DNS (over TCP here), its proxy, and the ceiling's ports.
    allowed = [(gateway_ip, ports["response"])]
    allowed += [(egress, port) for port in (53, 3128, 80, 443, 8443)]
    return {"forbidden": forbidden, "allowed": allowed}


@contextlib.contextmanager
def kernels(cluster: Cluster) -> Iterator[dict[str, tuple[dict[str, Any], GatewayKernelSession]]]:
    with contextlib.ExitStack() as stack:
        found = {}
        for role in ("victim", "attacker"):
            status = stack.enter_context(ready_session(cluster, role, resources={"cpu": "250m"}))
            session = stack.enter_context(
                GatewayKernelSession(
                    status["gatewayUrl"],
                    status["websocketUrl"],
                    "python3",
                    kernel_id=status["kernelId"],
                )
            )
            found[role] = (status, session)
        yield found


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch, exports: dict[str, str]) -> None:
    monkeypatch.setenv("JUPYTER_GATEWAY_AUTH_TOKEN", exports["JUPYTER_GATEWAY_AUTH_TOKEN"])


def test_a_kernel_reaches_only_its_launch_response_and_gets_through_without_the_enforcer(
    cluster: Cluster,
) -> None:
    assert enforcer.enforcing(), "the enforcer's chain does not come before the CNI accepts"
    with kernels(cluster) as found:
        victim_status, victim = found["victim"]
        _, attacker = found["attacker"]
        victim_ports = evaluate(victim, LISTENING_PORTS)
        assert len(victim_ports) >= 5, victim_ports  # shell, iopub, stdin, control, heartbeat
        wanted = targets(cluster, victim_status, victim_ports)
        probe = connect_probe(wanted["forbidden"] + wanted["allowed"])
        # The enforcer judges a new pod once its watch has seen it: probe after that (a cold
        # run once caught the attacker before its chain existed, reaching the API server).
        enforcer.wait_fenced(cluster, *(evaluate(k, OWN_ADDRESS) for k in (victim, attacker)))

        outcomes = evaluate(attacker, probe)
        reached = sorted(t for t, outcome in outcomes.items() if outcome == "connected")
        assert reached == sorted(f"{h}:{p}" for h, p in wanted["allowed"]), outcomes
        # The kernel's only DNS server is the egress process, which answers no cluster name.
        nameservers = evaluate(
            attacker,
            "[l.split()[1] for l in open('/etc/resolv.conf') if l.startswith('nameserver')]",
        )
        assert nameservers == [service_ip(cluster, f"{PREFIX}-egress")], nameservers
        resolved = evaluate(attacker, RESOLVE_SERVICE)
        assert resolved == "gaierror", resolved

        enforcer.stop(cluster)
        try:
            assert not enforcer.enforcing()
            unguarded = evaluate(attacker, probe)
        finally:
            enforcer.start(cluster, cluster.state / "enforcer.kubeconfig")
        blocked = sorted(t for t, outcome in unguarded.items() if outcome != "connected")
        assert blocked == [], unguarded

        # Enforcing again, the same probe is refused again; both kernels still serve their users.
        again = evaluate(attacker, probe)
        assert sorted(t for t, o in again.items() if o == "connected") == reached, again
        assert str(victim.execute("6 * 7")) == "42"
