"""Egress allow-lists on the cluster, probed from inside real kernel pods.

The cluster runs with a ceiling of the project's own test host names (ci/local-cluster-values.yaml)
and the test hosts themselves (``testkit.egress``) serving on the node's address, outside every
pod: an origin for allowed.test, other.test and also.test that records every request reaching it,
and the egress process's upstream resolver, which records every name it is asked.  The egress
process is a pod of its own; a kernel pod's DNS and proxy are its Service.  Each refusal is checked
twice: the kernel got nothing, and nothing reached the test hosts.  That the kernels' NetworkPolicy
is what keeps them from the test hosts' address directly is shown in test_policies.py, with the
enforcer stopped.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator

import pytest

from jupyter_kernel_client import EgressRefusedError, GatewayConfig, GatewayKernelSession
from testkit.cluster.cluster import RELEASE_NAMESPACE, Cluster
from testkit.cluster.control_plane import node_address
from testkit.compose import metric_samples
from testkit.egress import PROBES, Records, check_refusals_and_bytes_are_seen, marker, probe

from .conftest import (
    PREFIX,
    delete_session,
    gateway_metrics,
    kernel_pods,
    ready_session,
    service_ip,
    session_manifest,
    starts,
    wait_for,
    wait_phase,
)

pytestmark = pytest.mark.timeout(600)

EGRESS = f"{PREFIX}-egress"


@pytest.fixture(scope="module")
def test_hosts(cluster: Cluster) -> Records:
    return Records(cluster.test_hosts)


@contextlib.contextmanager
def session(exports: dict[str, str], allow: str | None = None) -> Iterator[GatewayKernelSession]:
    """A kernel whose start asked for ``allow`` (None: for nothing), with the probes defined."""
    env = {"KERNEL_EGRESS_ALLOW": allow} if allow is not None else {}
    with GatewayKernelSession(
        exports["GATEWAY_HTTP"],
        exports["GATEWAY_WS"],
        "python3",
        launch_env=env,
        gateway_token=exports["JUPYTER_GATEWAY_AUTH_TOKEN"],
    ) as kernel:
        kernel.execute(PROBES, timeout=120).raise_for_error()
        yield kernel


def egress_logs(cluster: Cluster) -> str:
    return cluster.kubectl("logs", "-n", RELEASE_NAMESPACE, f"deployment/{EGRESS}")


def egress_metrics(cluster: Cluster) -> list[tuple[str, dict[str, str], float]]:
    """The egress process's /metrics, read inside its pod (its control port admits the gateway
    alone)."""
    token = cluster.secret(EGRESS, "control-token")
    code = (
        "import sys, urllib.request as u\n"
        "r = u.Request('http://127.0.0.1:8900/metrics',"
        " headers={'Authorization': 'Bearer ' + sys.stdin.read().strip()})\n"
        "print(u.urlopen(r, timeout=5).read().decode())\n"
    )
    text = cluster.kubectl(
        "exec", "-i", "-n", RELEASE_NAMESPACE, f"deployment/{EGRESS}", "--",
        "python", "-c", code, input=token,
    )  # fmt: skip
    return list(metric_samples(text))


def session_pods(cluster: Cluster) -> set[str]:
    """The kernel pods serving sessions (the pool's own may come and go meanwhile)."""
    names = {p["metadata"]["name"] for p in kernel_pods(cluster, "kernel_id")}
    return {name for name in names if not name.startswith("sandbox-pool-")}


@pytest.fixture(scope="module")
def allowed(exports: dict[str, str]) -> Iterator[GatewayKernelSession]:
    """A session whose list is allowed.test (443 and 80) alone."""
    with session(exports, "allowed.test") as kernel:
        yield kernel


# --- 1. allowed --------------------------------------------------------------------------------


def test_an_allowed_name_works_through_the_proxy_variables_and_for_code_that_ignores_them(
    cluster: Cluster, test_hosts: Records, allowed: GatewayKernelSession
) -> None:
    path = marker()
    # The kernel's proxy and DNS are the egress Service, as the launcher resolved it.
    assert probe(allowed, "EGRESS") == service_ip(cluster, EGRESS)
    status, body = probe(allowed, f"via_proxy('https://allowed.test{path}')")
    assert status == 200, body
    seen = json.loads(body)
    assert (seen["host"], seen["tls"], seen["sni"]) == ("allowed.test", True, "allowed.test")
    status, body = probe(allowed, f"via_proxy('http://allowed.test{path}-plain')")
    assert status == 200 and json.loads(body)["tls"] is False, body
    # Code that resolves and connects itself gets the egress address, and is served there.
    assert probe(allowed, "resolve('allowed.test')") == probe(allowed, "EGRESS")
    answer = probe(allowed, f"direct('allowed.test', 443, path='{path}-direct')")
    assert answer.startswith("HTTP/1.1 200"), answer
    answer = probe(allowed, f"direct('allowed.test', 80, tls=False, path='{path}-direct-plain')")
    assert answer.startswith("HTTP/1.1 200"), answer
    suffixes = ("", "-plain", "-direct", "-direct-plain")
    assert [len(test_hosts.reached(path + suffix)) for suffix in suffixes] == [1, 1, 1, 1]


def test_a_port_the_list_names_is_allowed_and_no_other(
    exports: dict[str, str], test_hosts: Records
) -> None:
    path = marker()
    with session(exports, "allowed.test:8443") as kernel:
        status, body = probe(kernel, f"via_proxy('https://allowed.test:8443{path}')")
        assert status == 200, body
        assert probe(kernel, f"via_proxy('https://allowed.test{path}-443')")[0] != 200
        assert probe(kernel, f"via_proxy('https://allowed.test:9443{path}-9443')")[0] != 200
    assert len(test_hosts.reached(path)) == 1
    assert not test_hosts.reached(path + "-443") and not test_hosts.reached(path + "-9443")


# --- 2. refused, with nothing leaving the platform ---------------------------------------------


def test_a_name_not_on_the_list_and_a_direct_address_are_refused(
    test_hosts: Records, allowed: GatewayKernelSession
) -> None:
    path, origin = marker(), node_address()
    status, body = probe(allowed, f"via_proxy('https://other.test{path}')")
    assert status != 200 and "403" in str(status) + body, body
    assert probe(allowed, f"via_proxy('http://other.test{path}')")[0] == 403
    assert not probe(allowed, "resolve('other.test')")[0].isdigit()
    answer = probe(allowed, f"direct(EGRESS, 443, sni='other.test', path='{path}')")
    assert not answer.startswith("HTTP/1.1 200"), answer
    # The test hosts' own address: not a name, through the proxy; no route, directly.
    assert probe(allowed, f"via_proxy('https://{origin}{path}')")[0] != 200
    assert probe(allowed, f"via_proxy('http://{origin}{path}')")[0] in (400, 403)
    for port in (443, 80):
        answer = probe(allowed, f"direct('{origin}', {port}, tls=False, path='{path}', timeout=3)")
        assert "Error" in answer.split(":")[0], answer
    assert not test_hosts.reached(path)


def test_fronting_and_a_connect_to_another_host_are_refused(
    test_hosts: Records, allowed: GatewayKernelSession
) -> None:
    path = marker()
    answer = probe(
        allowed,
        f"direct('allowed.test', 443, sni='allowed.test', host_header='other.test', path='{path}')",
    )
    assert not answer.startswith("HTTP/1.1 200"), answer
    code = """
sock = _socket.create_connection((EGRESS, 3128), timeout=10)
sock.sendall(b"CONNECT other.test:443 HTTP/1.1\\r\\nHost: allowed.test:443\\r\\n\\r\\n")
print(_json.dumps(sock.recv(4096).decode(errors="replace").split("\\r\\n")[0]))
"""
    result = allowed.execute(code, timeout=60)
    result.raise_for_error()
    assert " 403 " in json.loads(result.stdout) + " ", result.stdout
    assert not test_hosts.reached(path)


def test_an_allowed_name_resolving_to_a_private_or_platform_address_is_refused(
    exports: dict[str, str], test_hosts: Records
) -> None:
    names = ["private.test", "metadata.test", "kernelnet.test", "apiserver.test"]
    path = marker()
    with session(exports, ",".join(names)) as kernel:
        for name in names:
            status, body = probe(kernel, f"via_proxy('http://{name}{path}')")
            assert status != 200 and ("private" in body or "never dialled" in body), (name, body)
    asked = test_hosts.asked()
    assert [name for name in names if name not in asked] == []  # resolved, then refused
    assert not test_hosts.reached(path)


def test_udp_quic_dot_and_doh_are_refused(
    test_hosts: Records, allowed: GatewayKernelSession
) -> None:
    seen = probe(allowed, f"transports({node_address()!r})")
    # Nothing answers UDP or 853 on the egress Service, and the policy drops what is not its.
    assert seen["quic_egress"] in ("ConnectionRefusedError", "TimeoutError", "timeout"), seen
    assert seen["quic_origin"] in ("ConnectionRefusedError", "TimeoutError", "timeout"), seen
    assert not seen["dot"].startswith("HTTP") and not seen["dot_origin"].startswith("HTTP"), seen
    assert seen["doh"][0] != 200, seen
    assert not [seen for seen in test_hosts.requests() if "dns-query" in seen["path"]]


# --- 3. DNS ------------------------------------------------------------------------------------


def test_the_kernels_dns_answers_only_its_list_and_asks_no_one_for_the_rest(
    cluster: Cluster, test_hosts: Records, allowed: GatewayKernelSession
) -> None:
    secret = f"exfil-{uuid.uuid4().hex[:20]}"
    names = [f"{secret}.other.test", f"{secret}.allowed.test", f"{secret}.example.com"]
    names.append(f"{PREFIX}-gateway.{RELEASE_NAMESPACE}.svc.cluster.local")  # cluster names too
    answers = probe(allowed, f"[resolve(n) for n in {names!r}] + [resolve('allowed.test'), EGRESS]")
    assert all(not answer[0].isdigit() for answer in answers[:4]), answers
    assert answers[4] == answers[5]
    assert not [name for name in test_hosts.asked() if secret in name or ".svc" in name]
    refused = [line for line in egress_logs(cluster).splitlines() if f"DNS {names[0]}" in line]
    assert refused and f"session={allowed.kernel_id}" in refused[-1], refused
    assert "reason=dns_not_allowed" in refused[-1]


# --- 4. per session ----------------------------------------------------------------------------


def test_a_warm_kernel_takes_its_list_at_claim_and_leaves_none_behind(
    cluster: Cluster, exports: dict[str, str], test_hosts: Records
) -> None:
    token = exports["JUPYTER_GATEWAY_AUTH_TOKEN"]
    ready = 'sandbox_pool_kernels{kernelspec="python3",state="ready"} 1.0'

    def pool_ready() -> bool:
        return ready in gateway_metrics(cluster, token)

    wait_for("the warm pool to fill", pool_ready, 180, 2)
    warm = starts(gateway_metrics(cluster, token), "warm")
    path = marker()
    with session(exports, "also.test") as kernel:
        assert starts(gateway_metrics(cluster, token), "warm") == warm + 1
        status, body = probe(kernel, f"via_proxy('https://also.test{path}')")
        assert status == 200, body
        address = probe(kernel, "_socket.gethostbyname(_socket.gethostname())")
        kernel_id = kernel.kernel_id
    revoked = f"{address} revoked (session {kernel_id})"
    wait_for("the grant to be revoked", lambda: revoked in egress_logs(cluster), 10, 0.2)
    wait_for("the warm pool to refill", pool_ready, 180, 2)
    with session(exports) as stranger:  # warm too, and asks for nothing
        assert starts(gateway_metrics(cluster, token), "warm") == warm + 2
        assert probe(stranger, f"via_proxy('https://also.test{path}-stranger')")[0] != 200
        assert not probe(stranger, "resolve('also.test')")[0].isdigit()
    assert len(test_hosts.reached(path)) == 1 and not test_hosts.reached(path + "-stranger")


def test_a_session_without_a_list_gets_nothing(
    exports: dict[str, str], test_hosts: Records
) -> None:
    path = marker()
    with session(exports) as kernel:
        for url in (f"https://allowed.test{path}", f"http://allowed.test{path}"):
            assert probe(kernel, f"via_proxy('{url}')")[0] != 200
        assert not probe(kernel, "resolve('allowed.test')")[0].isdigit()
        answer = probe(kernel, f"direct(EGRESS, 443, sni='allowed.test', path='{path}')")
        assert not answer.startswith("HTTP/1.1 200"), answer
    assert not test_hosts.reached(path)


def test_a_sandbox_session_gets_its_spec_egress_allow(
    cluster: Cluster, exports: dict[str, str], test_hosts: Records
) -> None:
    path = marker()
    with (
        ready_session(cluster, "egress", egress={"allow": ["also.test"]}) as status,
        GatewayKernelSession(
            status["gatewayUrl"],
            status["websocketUrl"],
            "python3",
            kernel_id=status["kernelId"],
            gateway_token=exports["JUPYTER_GATEWAY_AUTH_TOKEN"],
        ) as kernel,
    ):
        kernel.execute(PROBES, timeout=120).raise_for_error()
        assert probe(kernel, f"via_proxy('https://also.test{path}')")[0] == 200
        assert probe(kernel, f"via_proxy('https://allowed.test{path}-other')")[0] != 200
    assert len(test_hosts.reached(path)) == 1 and not test_hosts.reached(path + "-other")


def test_a_sandbox_session_beyond_the_ceiling_fails_and_starts_no_pod(cluster: Cluster) -> None:
    name = f"beyond-{uuid.uuid4().hex[:8]}"
    before = session_pods(cluster)
    cluster.apply([session_manifest(name, egress={"allow": ["also.test", "evil.example"]})])
    try:
        status = wait_phase(cluster, name, {"Ready", "Failed"})
        assert status["phase"] == "Failed", status
        (ready,) = (c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "EgressRefused" and "evil.example" in ready["message"], ready
        assert session_pods(cluster) == before
    finally:
        delete_session(cluster, name)


# --- 5. outside the kernel ---------------------------------------------------------------------


def test_the_kernel_cannot_reach_the_egress_control_port(allowed: GatewayKernelSession) -> None:
    answer = probe(allowed, "direct(EGRESS, 8900, tls=False, path='/health', timeout=3)")
    assert "Error" in answer.split(":")[0], answer


def test_a_list_beyond_the_ceiling_refuses_the_start(
    cluster: Cluster, exports: dict[str, str]
) -> None:
    before = session_pods(cluster)
    config = GatewayConfig(
        exports["GATEWAY_HTTP"],
        token=exports["JUPYTER_GATEWAY_AUTH_TOKEN"],
        egress_allow=["allowed.test", "evil.example"],
    )
    with pytest.raises(EgressRefusedError) as refused:
        GatewayKernelSession(config).start()
    assert refused.value.status_code == 403
    assert "evil.example" in str(refused.value) and "allowed.test" in refused.value.ceiling
    for wrong in (node_address(), "*", "allowed.test:9443"):
        with pytest.raises(EgressRefusedError):
            GatewayKernelSession(config.replace(egress_allow=[wrong])).start()
    assert session_pods(cluster) == before


# --- 6. seen -----------------------------------------------------------------------------------


def test_refusals_are_logged_and_counted_and_bytes_are_counted_per_session(
    cluster: Cluster, allowed: GatewayKernelSession
) -> None:
    check_refusals_and_bytes_are_seen(
        allowed, lambda: egress_metrics(cluster), lambda: egress_logs(cluster)
    )
