"""Egress allow-lists, probed from inside real kernels of the compose stack.

The stack runs with a ceiling (``conftest.EGRESS_CEILING``) and the project's own test hosts: an
origin for allowed.test, other.test and also.test (one address, as co-tenants of a CDN) that
records every request reaching it, and a resolver that records every name it is asked.  Each
probe is code a hostile kernel could run; each refusal is checked twice: the kernel got nothing,
and nothing reached the test hosts.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from jupyter_kernel_client import EgressRefusedError, GatewayConfig, GatewayKernelSession
from testkit.compose import docker, metric_samples
from testkit.egress import PROBES, check_refusals_and_bytes_are_seen, marker, probe

from .conftest import TEST_HOSTS, Stack


@contextlib.contextmanager
def session(stack: Stack, allow: str | None = None) -> Iterator[GatewayKernelSession]:
    """A kernel whose start asked for ``allow`` (None: for nothing), with the probes defined."""
    env = {"KERNEL_EGRESS_ALLOW": allow} if allow is not None else {}
    with GatewayKernelSession(
        stack.gateway_http,
        stack.gateway_ws,
        "python3",
        launch_env=env,
        gateway_token=stack.gateway_token,
    ) as kernel:
        kernel.execute(PROBES).raise_for_error()
        yield kernel


def reached(stack: Stack, path: str) -> list[dict[str, Any]]:
    assert stack.test_hosts is not None
    return stack.test_hosts.reached(path)


def asked(stack: Stack) -> list[str]:
    assert stack.test_hosts is not None
    return stack.test_hosts.asked()


def egress_logs(stack: Stack) -> str:
    """The egress process's log (it logs to stderr)."""
    done = subprocess.run(
        ["docker", "logs", stack.container("egress")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout


def egress_metrics(stack: Stack) -> list[tuple[str, dict[str, str], float]]:
    token = stack.env["SANDBOX_EGRESS_CONTROL_TOKEN"]
    code = (
        "import urllib.request as u;"
        "r = u.Request('http://127.0.0.1:8900/metrics', headers={'Authorization': 'Bearer "
        f"{token}'}});print(u.urlopen(r, timeout=5).read().decode())"
    )
    text = docker("exec", stack.container("egress"), "python", "-c", code)
    return list(metric_samples(text))


@pytest.fixture(autouse=True)
def test_hosts_reachable(stack: Stack) -> None:
    """A test that recreated the egress container (a compose ``up``) took it off the test hosts'
    network."""
    assert stack.test_hosts is not None
    stack.test_hosts.join(stack.container("egress"))


@pytest.fixture(scope="module")
def allowed(stack: Stack) -> Iterator[GatewayKernelSession]:
    """A session whose list is allowed.test (443 and 80) alone."""
    with session(stack, "allowed.test") as kernel:
        yield kernel


# --- 1. allowed --------------------------------------------------------------------------------


def test_an_allowed_name_works_over_https_and_http_through_the_proxy_variables(
    stack: Stack, allowed: GatewayKernelSession
) -> None:
    path = marker()
    status, body = probe(allowed, f"via_proxy('https://allowed.test{path}')")
    assert status == 200, body
    seen = json.loads(body)
    assert (seen["host"], seen["tls"], seen["sni"]) == ("allowed.test", True, "allowed.test")
    status, body = probe(allowed, f"via_proxy('http://allowed.test{path}-plain')")
    assert status == 200, body
    assert json.loads(body)["tls"] is False
    assert len(reached(stack, path)) == 1 and len(reached(stack, path + "-plain")) == 1


def test_an_allowed_name_works_for_code_that_ignores_the_proxy_variables(
    stack: Stack, allowed: GatewayKernelSession
) -> None:
    path = marker()
    assert probe(allowed, "resolve('allowed.test')") == probe(allowed, "EGRESS")
    answer = probe(allowed, f"direct('allowed.test', 443, path='{path}')")
    assert answer.startswith("HTTP/1.1 200"), answer
    answer = probe(allowed, f"direct('allowed.test', 80, tls=False, path='{path}-plain')")
    assert answer.startswith("HTTP/1.1 200"), answer
    assert [seen["tls"] for seen in reached(stack, path) + reached(stack, path + "-plain")] == [
        True,
        False,
    ]


def test_a_port_the_list_names_is_allowed_and_no_other(stack: Stack) -> None:
    path = marker()
    with session(stack, "allowed.test:8443") as kernel:
        status, body = probe(kernel, f"via_proxy('https://allowed.test:8443{path}')")
        assert status == 200, body
        status, body = probe(kernel, f"via_proxy('https://allowed.test{path}-443')")
        assert status != 200
    assert len(reached(stack, path)) == 1 and not reached(stack, path + "-443")


# --- 2. refused, with nothing leaving the platform ---------------------------------------------


def test_a_name_not_on_the_list_is_refused(stack: Stack, allowed: GatewayKernelSession) -> None:
    path = marker()
    status, body = probe(allowed, f"via_proxy('https://other.test{path}')")
    assert status != 200 and "403" in str(status) + body, body
    status, body = probe(allowed, f"via_proxy('http://other.test{path}')")
    assert status == 403, body
    assert "NXDOMAIN" in probe(allowed, "resolve('other.test')") or "gaierror" in probe(
        allowed, "resolve('other.test')"
    )
    # Straight at the egress address with the other name: refused at the handshake.
    assert not probe(allowed, f"direct(EGRESS, 443, sni='other.test', path='{path}')").startswith(
        "HTTP/1.1 200"
    )
    assert not reached(stack, path)


def test_a_direct_address_is_refused(stack: Stack, allowed: GatewayKernelSession) -> None:
    path = marker()
    status, body = probe(allowed, f"via_proxy('https://{TEST_HOSTS}{path}')")
    assert status != 200, body
    status, body = probe(allowed, f"via_proxy('http://{TEST_HOSTS}{path}')")
    assert status in (400, 403), body  # not a host name
    # No route: the kernel's network is internal.
    for port in (443, 80):
        answer = probe(allowed, f"direct('{TEST_HOSTS}', {port}, tls=False, path='{path}')")
        assert answer.startswith("OSError") or "Error" in answer.split(":")[0], answer
    # An address in the Host header of a plain request to the egress address.
    answer = probe(
        allowed, f"direct(EGRESS, 80, tls=False, host_header='{TEST_HOSTS}', path='{path}')"
    )
    assert not answer.startswith("HTTP/1.1 200"), answer
    assert not reached(stack, path)


def test_sni_and_host_must_agree(stack: Stack, allowed: GatewayKernelSession) -> None:
    path = marker()
    answer = probe(
        allowed,
        f"direct('allowed.test', 443, sni='allowed.test', host_header='other.test', path='{path}')",
    )
    assert not answer.startswith("HTTP/1.1 200"), answer
    assert not reached(stack, path)


def test_a_connect_to_another_host_through_an_allowed_one_is_refused(
    stack: Stack, allowed: GatewayKernelSession
) -> None:
    path = marker()
    code = f"""
sock = _socket.create_connection((EGRESS, 3128), timeout=10)
sock.sendall(b"CONNECT other.test:443 HTTP/1.1\\r\\nHost: allowed.test:443\\r\\n\\r\\n")
first = sock.recv(4096).decode(errors="replace")
inner = _socket.create_connection((EGRESS, 3128), timeout=10)
inner.sendall(b"CONNECT allowed.test:443 HTTP/1.1\\r\\nHost: allowed.test:443\\r\\n\\r\\n")
inner.recv(4096)
tls = _ssl.create_default_context().wrap_socket(inner, server_hostname="allowed.test")
tls.sendall(b"GET {path} HTTP/1.1\\r\\nHost: other.test\\r\\nConnection: close\\r\\n\\r\\n")
second = tls.recv(4096).decode(errors="replace")
print(_json.dumps([first.split("\\r\\n")[0], second.split("\\r\\n")[0]]))
"""
    result = allowed.execute(code, timeout=60)
    result.raise_for_error()
    first, second = json.loads(result.stdout)
    assert " 403 " in first + " " and " 200 " not in second + " ", (first, second)
    assert not reached(stack, path)


@pytest.mark.parametrize("name", ["private.test", "metadata.test", "kernelnet.test", "loop.test"])
def test_an_allowed_name_resolving_to_a_private_or_platform_address_is_refused(
    stack: Stack, name: str
) -> None:
    path = marker()
    with session(stack, name) as kernel:
        status, body = probe(kernel, f"via_proxy('http://{name}{path}')")
        assert status != 200, body
        assert "private" in body or "never dialled" in body, body
    assert name in asked(stack)  # resolved by the enforcement point, then refused
    assert not reached(stack, path)


def test_udp_quic_dot_and_doh_are_refused(stack: Stack, allowed: GatewayKernelSession) -> None:
    seen = probe(allowed, f"transports({TEST_HOSTS!r})")
    assert seen["quic_egress"] in ("ConnectionRefusedError", "TimeoutError", "timeout"), seen
    assert seen["quic_origin"] in ("OSError", "TimeoutError", "timeout"), seen
    assert seen["dot"].startswith("ConnectionRefusedError"), seen
    assert not seen["dot_origin"].startswith("HTTP"), seen
    assert seen["doh"][0] != 200, seen
    assert not [seen for seen in stack.test_hosts.requests() if "dns-query" in seen["path"]]


# --- 3. DNS ------------------------------------------------------------------------------------


def test_the_kernels_dns_answers_only_its_list_and_asks_no_one_for_the_rest(
    stack: Stack, allowed: GatewayKernelSession
) -> None:
    secret = f"exfil-{uuid.uuid4().hex[:20]}"
    names = [f"{secret}.other.test", f"{secret}.allowed.test", f"{secret}.example.com"]
    answers = probe(allowed, f"[resolve(n) for n in {names!r}] + [resolve('allowed.test'), EGRESS]")
    assert all(not answer[0].isdigit() for answer in answers[:3]), answers
    assert answers[3] == answers[4]
    assert not [name for name in asked(stack) if secret in name]
    refused = [line for line in egress_logs(stack).splitlines() if f"DNS {names[0]}" in line]
    assert refused and f"session={allowed.kernel_id}" in refused[-1], refused
    assert "reason=dns_not_allowed" in refused[-1]


# --- 4. per session ----------------------------------------------------------------------------


def test_a_warm_kernel_takes_its_list_at_claim_and_leaves_none_behind(stack: Stack) -> None:
    stack.wait_pool_ready()
    warm_before = stack.metric("sandbox_kernel_starts_total", kernelspec="python3", source="warm")
    path = marker()
    with session(stack, "also.test") as kernel:
        status, body = probe(kernel, f"via_proxy('https://also.test{path}')")
        assert status == 200, body
        address = probe(kernel, "_socket.gethostbyname(_socket.gethostname())")
        kernel_id = kernel.kernel_id
    assert (
        stack.metric("sandbox_kernel_starts_total", kernelspec="python3", source="warm")
        > warm_before
    )
    # Revoked as the session ended.
    deadline = time.monotonic() + 5
    while f"{address} revoked (session {kernel_id})" not in egress_logs(stack):
        assert time.monotonic() < deadline, "the grant was not revoked when the session ended"
        time.sleep(0.1)
    stack.wait_pool_ready()
    with session(stack) as stranger:  # warm too, and asks for nothing
        assert probe(stranger, "via_proxy('https://also.test/')")[0] != 200
        assert not probe(stranger, "resolve('also.test')")[0].isdigit()
    assert len(reached(stack, path)) == 1


def test_a_session_without_a_list_gets_nothing(stack: Stack) -> None:
    path = marker()
    with session(stack) as kernel:
        for url in (f"https://allowed.test{path}", f"http://allowed.test{path}"):
            assert probe(kernel, f"via_proxy('{url}')")[0] != 200
        assert not probe(kernel, "resolve('allowed.test')")[0].isdigit()
        assert not probe(
            kernel, f"direct(EGRESS, 443, sni='allowed.test', path='{path}')"
        ).startswith("HTTP/1.1 200")
    assert not reached(stack, path)


# --- 5. outside the kernel ---------------------------------------------------------------------


def test_the_kernel_cannot_reach_the_egress_control_port(allowed: GatewayKernelSession) -> None:
    answer = probe(allowed, "direct(EGRESS, 8900, tls=False, path='/health')")
    assert answer.startswith(("ConnectionRefusedError", "ConnectionResetError")), answer


def test_a_list_beyond_the_ceiling_refuses_the_start(stack: Stack) -> None:
    before = stack.kernel_container_ids()
    config = GatewayConfig(stack.gateway_http, egress_allow=["allowed.test", "evil.example"])
    with pytest.raises(EgressRefusedError) as refused:
        GatewayKernelSession(config).start()
    assert refused.value.status_code == 403
    assert "evil.example" in str(refused.value) and "allowed.test" in refused.value.ceiling
    for wrong in (TEST_HOSTS, "*", "allowed.test:9443"):
        with pytest.raises(EgressRefusedError):
            GatewayKernelSession(config.replace(egress_allow=[wrong])).start()
    assert stack.kernel_container_ids() == before


# --- 6. seen -----------------------------------------------------------------------------------


def test_refusals_are_logged_and_counted_and_bytes_are_counted_per_session(
    stack: Stack, allowed: GatewayKernelSession
) -> None:
    check_refusals_and_bytes_are_seen(
        allowed, lambda: egress_metrics(stack), lambda: egress_logs(stack)
    )
