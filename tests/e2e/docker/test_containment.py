"""Containment between boxes: probes run as code in an attacker kernel with perfect knowledge of
its neighbours (their kernel ids, container addresses and listening ports).

Each probe here succeeded on the stack before every kernel got a network of its own and the
gateway its firewall: a kernel listed and drove other kernels through the gateway's API, reached
their ZMQ ports, read their iopub output and stalled every launch through the response port.
Traffic goes only to the stack's own containers.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from jupyter_kernel_client import GatewayKernelSession
from testkit.languages import LANGUAGES, python_probe

from .conftest import Stack, docker, kernel_network_name

pytestmark = pytest.mark.integration

SECRET = "victim-secret-4711"
MARKER = "victim-marker-0815"


def probe(session: GatewayKernelSession, code: str, timeout: float = 60) -> Any:
    """Run Python code that prints one JSON document in the session's kernel (a subprocess of a
    kernel of another language, ``testkit.languages``); return it decoded."""
    result = session.execute(python_probe(session.kernel_name, code), timeout=timeout)
    assert result.error is None, result.error
    return json.loads(result.stdout)


def start(stack: Stack, kernelspec: str = "python3", **kwargs: Any) -> GatewayKernelSession:
    session = GatewayKernelSession(
        stack.gateway_http,
        stack.gateway_ws,
        kernelspec,
        gateway_token=stack.gateway_token,
        **kwargs,
    )
    session.start()
    return session


# Every probe runs against kernels from the gateway's warm pool ("python3" in the compose stack)
# and against cold-started ones ("sandbox-python" has no pool): both must hold the same box.
@pytest.fixture(scope="module", params=["python3", "sandbox-python"], ids=["pooled", "cold"])
def kernelspec(request: pytest.FixtureRequest, stack: Stack) -> str:
    return str(request.param)


def start_probed(stack: Stack, kernelspec: str) -> GatewayKernelSession:
    """A victim or attacker kernel; a pooled one is checked to be served warm."""
    if kernelspec != "python3":
        return start(stack, kernelspec)
    stack.wait_pool_ready(size=1)
    labels = {"kernelspec": kernelspec, "source": "warm", "reason": ""}
    before = stack.metric("sandbox_kernel_starts_total", **labels)
    session = start(stack, kernelspec)
    assert stack.metric("sandbox_kernel_starts_total", **labels) == before + 1, "not pooled"
    return session


@pytest.fixture(scope="module")
def victim(stack: Stack, kernelspec: str) -> Iterator[GatewayKernelSession]:
    session = start_probed(stack, kernelspec)
    session.execute(f"secret = {SECRET!r}").raise_for_error()
    try:
        yield session
    finally:
        session.shutdown()


@pytest.fixture(scope="module")
def attacker(stack: Stack, kernelspec: str) -> Iterator[GatewayKernelSession]:
    session = start_probed(stack, kernelspec)
    try:
        yield session
    finally:
        session.shutdown()


def addresses(stack: Stack, container: str) -> list[str]:
    info = json.loads(docker("inspect", container))[0]
    return [net["IPAddress"] for net in info["NetworkSettings"]["Networks"].values()]


def listening_ports(session: GatewayKernelSession) -> list[int]:
    """The TCP ports a kernel listens on (its ZMQ channels), read inside that kernel."""
    return list(
        probe(
            session,
            "import json\n"
            "ports = set()\n"
            "for line in open('/proc/net/tcp').read().splitlines()[1:]:\n"
            "    fields = line.split()\n"
            "    if fields[3] == '0A':\n"
            "        ports.add(int(fields[1].split(':')[1], 16))\n"
            "print(json.dumps(sorted(ports)))",
        )
    )


CONNECT_PROBE = """
import json, socket
def attempt(host, port):
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((host, port))
        return 'connected'
    except OSError as e:
        return type(e).__name__
    finally:
        s.close()
targets = {targets!r}
print(json.dumps({{f'{{h}}:{{p}}': attempt(h, p) for h, p in targets}}))
"""


def network_view(stack: Stack, session: GatewayKernelSession) -> dict[str, Any]:
    """For a failure message: the kernel's routes and addresses, and its container's networks."""
    inside = probe(
        session,
        "import json, socket\n"
        "print(json.dumps({'routes': open('/proc/net/route').read().splitlines(),"
        " 'host': socket.gethostname(), 'fib': open('/proc/net/fib_trie').read()[:1500]}))",
    )
    container = json.loads(docker("inspect", inside["host"]))[0]
    return {**inside, "networks": container["NetworkSettings"]["Networks"]}


def connect_from(session: GatewayKernelSession, targets: list[tuple[str, int]]) -> dict[str, str]:
    return dict(probe(session, CONNECT_PROBE.format(targets=targets), timeout=120))


def test_gateway_api_is_unreachable_from_a_kernel(
    stack: Stack, attacker: GatewayKernelSession, victim: GatewayKernelSession
) -> None:
    gateway = stack.container("gateway")
    targets = [("sandbox-gateway", 8889), ("sandbox-gateway", 22), ("sandbox-gateway", 80)]
    targets += [(address, 8889) for address in addresses(stack, gateway)]
    outcome = connect_from(attacker, targets)
    assert "connected" not in outcome.values(), outcome
    # The same request that listed every kernel before.
    listed = probe(
        attacker,
        "import json, urllib.request\n"
        "try:\n"
        "    body = urllib.request.urlopen('http://sandbox-gateway:8889/api/kernels', timeout=5)"
        ".read().decode()\n"
        "except OSError as e:\n"
        "    body = 'refused: ' + type(e).__name__\n"
        "print(json.dumps(body))",
    )
    assert listed.startswith("refused"), listed
    assert str(victim.kernel_id) not in listed


def test_another_kernel_cannot_be_driven_through_the_gateway(
    attacker: GatewayKernelSession, victim: GatewayKernelSession
) -> None:
    # The attack that ran code in another user's kernel: a websocket to its channels.
    outcome = probe(
        attacker,
        "import json, asyncio, uuid\n"
        "from tornado.websocket import websocket_connect\n"
        f"url = 'ws://sandbox-gateway:8889/api/kernels/{victim.kernel_id}/channels'\n"
        "async def attack():\n"
        "    try:\n"
        "        ws = await asyncio.wait_for(websocket_connect(url), 10)\n"
        "    except Exception as e:\n"
        "        return 'refused: ' + type(e).__name__\n"
        "    msg = {'header': {'msg_id': uuid.uuid4().hex, 'msg_type': 'execute_request',"
        " 'username': 'x', 'session': uuid.uuid4().hex, 'version': '5.3', 'date': ''},"
        " 'parent_header': {}, 'metadata': {}, 'channel': 'shell',"
        " 'content': {'code': 'print(secret)', 'silent': False}}\n"
        "    await ws.write_message(json.dumps(msg))\n"
        "    seen = []\n"
        "    while len(seen) < 20:\n"
        "        try:\n"
        "            reply = await asyncio.wait_for(ws.read_message(), 5)\n"
        "        except asyncio.TimeoutError:\n"
        "            break\n"
        "        seen.append(str(reply))\n"
        "    return 'connected: ' + ' '.join(seen)\n"
        # IPython runs the cell's top-level await on its own loop.
        "print(json.dumps(await attack()))",
    )
    assert outcome.startswith("refused"), outcome
    assert SECRET not in outcome
    assert str(victim.execute("secret")) == repr(SECRET)  # the victim is untouched


def test_no_connection_between_kernels_in_either_direction(
    stack: Stack, attacker: GatewayKernelSession, victim: GatewayKernelSession
) -> None:
    victim_address = stack.kernel_container(str(victim.kernel_id))["Id"]
    victim_ips = addresses(stack, victim_address)
    ports = listening_ports(victim)
    assert len(ports) >= 5, ports  # the five ZMQ channels, at least
    outcome = connect_from(attacker, [(ip, port) for ip in victim_ips for port in ports])
    assert "connected" not in outcome.values(), outcome

    attacker_ips = addresses(stack, stack.kernel_container(str(attacker.kernel_id))["Id"])
    attacker_ports = listening_ports(attacker)
    outcome = connect_from(victim, [(ip, port) for ip in attacker_ips for port in attacker_ports])
    assert "connected" not in outcome.values(), outcome

    # Neither kernel can even name the other: they share no network.
    victim_networks = {kernel_network_name(str(victim.kernel_id))}
    attacker_info = stack.kernel_container(str(attacker.kernel_id))
    assert set(attacker_info["NetworkSettings"]["Networks"]).isdisjoint(victim_networks)


def test_another_kernels_iopub_cannot_be_read(
    stack: Stack, attacker: GatewayKernelSession, victim: GatewayKernelSession
) -> None:
    victim_ips = addresses(stack, stack.kernel_container(str(victim.kernel_id))["Id"])
    ports = listening_ports(victim)
    # The victim prints its marker for a while; the attacker subscribes to every port it has.
    printing = threading.Thread(
        target=victim.execute,
        args=(f"import time\nfor _ in range(40):\n    print({MARKER!r}); time.sleep(0.1)",),
        kwargs={"timeout": 60},
    )
    printing.start()
    try:
        heard = probe(
            attacker,
            "import json, zmq, time\n"
            "ctx = zmq.Context()\n"
            "subs = []\n"
            f"for ip in {victim_ips!r}:\n"
            f"    for port in {ports!r}:\n"
            "        s = ctx.socket(zmq.SUB)\n"
            "        s.setsockopt(zmq.SUBSCRIBE, b'')\n"
            "        s.setsockopt(zmq.LINGER, 0)\n"
            "        s.connect(f'tcp://{ip}:{port}')\n"
            "        subs.append(s)\n"
            "poller = zmq.Poller()\n"
            "for s in subs:\n"
            "    poller.register(s, zmq.POLLIN)\n"
            "frames = []\n"
            "end = time.monotonic() + 4\n"
            "while time.monotonic() < end:\n"
            "    for s, _ in poller.poll(200):\n"
            "        frames.extend(f.decode(errors='replace') for f in s.recv_multipart())\n"
            "ctx.destroy(linger=0)\n"
            "print(json.dumps(frames))",
        )
    finally:
        printing.join()
    assert not any(MARKER in frame for frame in heard)


def test_notebook_and_file_server_are_unreachable(
    stack: Stack, attacker: GatewayKernelSession
) -> None:
    targets = [(ip, 8888) for ip in addresses(stack, stack.container("notebook"))]
    targets += [(ip, 8080) for ip in addresses(stack, stack.container("fileserver"))]
    targets += [("notebook", 8888), ("fileserver", 8080)]
    outcome = connect_from(attacker, targets)
    assert "connected" not in outcome.values(), (outcome, network_view(stack, attacker))


# A hostile kernel on the launch-response port: it holds connections open with a partial
# message, trickles bytes and pushes 100 MB, from background threads that keep going while the
# test starts new kernels.
RESPONSE_ATTACK = """
import socket, threading, time, os
host, port = os.environ['RESPONSE_ADDRESS'].rsplit(':', 1)
stop_at = time.monotonic() + {seconds}
def hold():
    s = socket.create_connection((host, int(port)), timeout=5)
    s.sendall(b'eyJ2ZXJzaW9uIjogMSwg')  # the start of a base64 JSON payload, never finished
    while time.monotonic() < stop_at:
        time.sleep(0.5)
    s.close()
def trickle():
    s = socket.create_connection((host, int(port)), timeout=5)
    try:
        while time.monotonic() < stop_at:
            s.sendall(b'A')
            time.sleep(0.2)
    except OSError:
        pass
    s.close()
def flood():
    chunk = b'A' * 1024 * 1024
    try:
        s = socket.create_connection((host, int(port)), timeout=5)
        for _ in range(100):
            s.sendall(chunk)
        s.close()
    except OSError:
        pass
attackers = (hold, hold, hold, trickle, flood)
attack_threads = [threading.Thread(target=f, daemon=True) for f in attackers]
for t in attack_threads:
    t.start()
time.sleep(1)
print('{{}}')
"""


def test_response_port_attack_delays_no_launch(
    stack: Stack, attacker: GatewayKernelSession
) -> None:
    probe(attacker, RESPONSE_ATTACK.format(seconds=60))
    started = time.monotonic()
    # Generous bounds: a stalled gateway took the full 30 s launch timeout and then failed.
    with GatewayKernelSession(
        stack.gateway_http, stack.gateway_ws, "python3", startup_timeout=25
    ) as session:
        assert str(session.execute("1 + 1")) == "2"
    assert time.monotonic() - started < 20
    kernels = requests.get(
        f"{stack.gateway_http}/api/kernels", headers=stack.auth, timeout=10
    ).json()
    assert all(kernel["execution_state"] != "starting" for kernel in kernels), kernels


def test_a_kernel_network_is_removed_with_its_kernel(stack: Stack) -> None:
    session = start(stack)
    name = kernel_network_name(str(session.kernel_id))
    assert name in stack.kernel_networks()
    session.shutdown()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if name not in stack.kernel_networks():
            break
        time.sleep(0.5)
    assert name not in stack.kernel_networks()


def test_gateway_settings_reach_the_launcher_when_a_client_sends_env(stack: Stack) -> None:
    # The e2e stack sets SANDBOX_KERNEL_TMP_SIZE=48m and allows a second kernel image.  EG used to
    # drop every SANDBOX_* variable that EG_INHERITED_ENVS did not list whenever a start request
    # carried its own env, so the allow-list never reached the launcher.
    image = "mini-jupyter-sandbox/kernel-python:latest"
    session = start(stack, launch_env={"KERNEL_IMAGE": image, "SANDBOX_KERNEL_PIDS": "-1"})
    try:
        info = stack.kernel_container(str(session.kernel_id))
        assert info["Config"]["Image"] == image
        assert info["HostConfig"]["Tmpfs"]["/tmp"].endswith("size=48m")
        # A client's own SANDBOX_* value never reaches the launcher.
        assert info["HostConfig"]["PidsLimit"] == 256
    finally:
        session.shutdown()


def test_the_gateway_routes_nothing_between_its_networks(stack: Stack) -> None:
    """Defence in depth beside its firewall: the gateway, on every kernel network, does not
    forward packets, and answers ARP only for the address of the network asked on."""
    gateway = stack.container("gateway")
    read = "cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/all/arp_ignore"
    assert docker("exec", gateway, "sh", "-c", read).split() == ["0", "1"]


@pytest.fixture(scope="module", params=sorted(LANGUAGES))
def language_attacker(
    request: pytest.FixtureRequest, stack: Stack
) -> Iterator[GatewayKernelSession]:
    session = start(stack, str(request.param))
    try:
        yield session
    finally:
        session.shutdown()


def test_a_kernel_of_any_language_reaches_no_neighbour(
    stack: Stack, language_attacker: GatewayKernelSession
) -> None:
    """The probes above, from code that a Bash, Deno or R kernel starts: the box is the same."""
    victim = start_probed(stack, "python3")
    try:
        victim_ips = addresses(stack, stack.kernel_container(str(victim.kernel_id))["Id"])
        ports = listening_ports(victim)
        gateway = stack.container("gateway")
        targets = [(ip, port) for ip in victim_ips for port in ports]
        targets += [("sandbox-gateway", 8889)] + [(ip, 8889) for ip in addresses(stack, gateway)]
        targets += [(ip, 8888) for ip in addresses(stack, stack.container("notebook"))]
        targets += [(ip, 8080) for ip in addresses(stack, stack.container("fileserver"))]
        outcome = connect_from(language_attacker, targets)
        assert "connected" not in outcome.values(), outcome
        # And the other way: the victim cannot reach the attacker's kernel ports either.
        attacker_ips = addresses(
            stack, stack.kernel_container(str(language_attacker.kernel_id))["Id"]
        )
        back = connect_from(
            victim, [(ip, p) for ip in attacker_ips for p in listening_ports(language_attacker)]
        )
        assert back and "connected" not in back.values(), back
    finally:
        victim.shutdown()
