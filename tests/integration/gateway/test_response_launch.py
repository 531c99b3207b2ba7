"""Real kernels over the real launch-response path, attacked by code in another real kernel.

The test gateway's kernelspecs here use ``local_launcher_proxy.LocalLauncherProcessProxy``: the
kernel is gateway_provisioners' own ``launch_ipykernel.py`` run as a local process, which sends
its encrypted connection info to the gateway's response address, as a container kernel does.
The attacker is code executed in another such kernel; it knows what a kernel knows (the response
address and public key from its own launcher's arguments, its own connection info, the victim's
kernel id) and uses loopback addresses other than 127.0.0.1, the way another container has an
address of its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from jupyter_kernel_client import GatewayKernelSession
from testkit.gateway import (
    Gateway,
    add_local_launcher_kernelspec,
    gateway_venv,
    local_launcher_argv,
    local_launcher_env,
)

LAUNCH_TIMEOUT = 20  # EG's launch timeout in this gateway, seconds

# What every attack starts from: the response address and the gateway's public key are in the
# kernel launcher's arguments (in a container, in its environment).
ATTACKER = r"""
import base64, json, socket, threading, time
_argv = open("/proc/self/cmdline", "rb").read().split(b"\0")
def _arg(name):
    return _argv[_argv.index(name.encode()) + 1].decode()
_host, _port = _arg("--response-address").rsplit(":", 1)
RESPONSE = (_host, int(_port))
PUBLIC_KEY = _arg("--public-key")
def connect(source):
    return socket.create_connection(RESPONSE, timeout=10, source_address=(source, 0))
"""

# Silent, trickling, 100 MB and garbage connections, kept alive by the kernel.
STALL = r"""
held = [connect("127.0.0.2") for _ in range(3)]
for sock in held:
    sock.sendall(b"eyJ2ZXJzaW9uIjogMSwg")
def trickle():
    sock = connect("127.0.0.3")
    held.append(sock)
    try:
        while True:
            sock.sendall(b"A")
            time.sleep(0.05)
    except OSError:
        pass
def flood():
    sock = connect("127.0.0.4")
    held.append(sock)
    try:
        sock.sendall(b"A" * (100 * 2**20))
    except OSError:
        pass
for target in (trickle, flood):
    threading.Thread(target=target, daemon=True).start()
with connect("127.0.0.5") as sock:
    sock.sendall(b"\x00garbage" * 512)
time.sleep(0.3)
print("stalling", RESPONSE)
"""

# Answers for VICTIM that point at this kernel's own ports and key (version 1 and version 0),
# sent from each address in SOURCES over and over for DURATION seconds.
FORGE = r"""
from Cryptodome.Cipher import AES, PKCS1_v1_5
from Cryptodome.PublicKey import RSA
from Cryptodome.Random import get_random_bytes
from Cryptodome.Util.Padding import pad
from ipykernel.connect import get_connection_info
forged = dict(json.loads(get_connection_info()), kernel_id=VICTIM)
rsa = PKCS1_v1_5.new(RSA.importKey(base64.b64decode(PUBLIC_KEY)))
def version_1():
    aes_key = get_random_bytes(16)
    info = AES.new(aes_key, AES.MODE_ECB).encrypt(pad(json.dumps(forged).encode(), 16))
    envelope = {"version": 1, "key": base64.b64encode(rsa.encrypt(aes_key)).decode(),
                "conn_info": base64.b64encode(info).decode()}
    return base64.b64encode(json.dumps(envelope).encode())
def version_0():
    plain = json.dumps(forged).encode()
    plain += b" " * (-len(plain) % 16)
    return base64.b64encode(AES.new(VICTIM[:16].encode(), AES.MODE_ECB).encrypt(plain))
SENT = 0
def forge():
    global SENT
    end = time.monotonic() + DURATION
    while time.monotonic() < end:
        for source in SOURCES:
            for payload in (version_1(), version_0()):
                try:
                    with connect(source) as sock:
                        sock.sendall(payload)
                    SENT += 1
                except OSError:
                    pass
        time.sleep(0.1)
version_1(), version_0()  # fail here, not silently in the thread
threading.Thread(target=forge, daemon=True).start()
"""


def start_forging(
    attacker: GatewayKernelSession, victim_id: str, seconds: float, sources: int = 1
) -> None:
    """Forged answers for ``victim_id`` from ``sources`` addresses, each a hostile kernel's."""
    addresses = [f"127.0.0.{n + 6}" for n in range(sources)]
    prelude = f"VICTIM = {victim_id!r}; DURATION = {seconds}; SOURCES = {addresses!r}\n"
    attacker.execute(prelude + FORGE).raise_for_error()


def forged_answers_sent(attacker: GatewayKernelSession) -> int:
    return int(attacker.execute("print(SENT, end='')").stdout)


@pytest.fixture(scope="module")
def kernelspecs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JUPYTER_PATH entry with the test kernelspecs."""
    share = tmp_path_factory.mktemp("share")
    launcher = local_launcher_argv()
    add_local_launcher_kernelspec(share, "launcher-python", launcher)
    # Outlives its gateway, as a container kernel does (ipykernel exits with JPY_PARENT_PID's
    # process otherwise; the kernel image's bootstrap unsets it for the same reason).
    add_local_launcher_kernelspec(
        share, "detached-python", ["/usr/bin/env", "-u", "JPY_PARENT_PID", *launcher]
    )
    # A kernel that never answers (its id in its arguments, to find it among processes).
    python = str(gateway_venv() / "bin" / "python")
    add_local_launcher_kernelspec(
        share, "silent-python", [python, "-c", "import time; time.sleep(600)", "{kernel_id}"]
    )
    return share


def gateway_env(kernelspecs: Path, **extra: str) -> dict[str, str]:
    """A gateway whose kernels answer over its response address, bound to 127.0.0.1."""
    return {**local_launcher_env(kernelspecs, os.path.dirname(__file__), LAUNCH_TIMEOUT), **extra}


@pytest.fixture(scope="module")
def gateway(kernelspecs: Path) -> Iterator[Gateway]:
    gw = Gateway(env=gateway_env(kernelspecs)).start()
    try:
        yield gw
    finally:
        gw.stop()


def session(
    gw: Gateway, kernel_name: str = "launcher-python", kernel_id: str | None = None, **env: str
) -> GatewayKernelSession:
    """A new kernel, or with ``kernel_id`` the running one, through the client."""
    return GatewayKernelSession(
        gw.http,
        gw.ws,
        kernel_name,
        launch_env=env,
        kernel_id=kernel_id,
        startup_timeout=LAUNCH_TIMEOUT + 10,
        max_retries=0,
    )


@pytest.fixture
def attacker(gateway: Gateway) -> Iterator[GatewayKernelSession]:
    """A kernel running hostile code; shutting it down ends its connections."""
    with session(gateway) as kernel:
        kernel.execute(ATTACKER).raise_for_error()
        yield kernel


def kernel_ids(gw: Gateway) -> set[str]:
    return {str(kernel["id"]) for kernel in gw.kernels()}


def test_a_kernel_starts_while_another_kernel_stalls_the_response_port(
    gateway: Gateway, attacker: GatewayKernelSession
) -> None:
    attack = attacker.execute(STALL, timeout=30)
    attack.raise_for_error()
    assert "stalling" in attack.stdout

    started = time.monotonic()
    with session(gateway) as victim:
        start_seconds = time.monotonic() - started
        assert victim.execute("6 * 7").execute_result == {"text/plain": "42"}
    # A start takes ~1 s here; a stalled response port would hold it until the launch timeout.
    assert start_seconds < LAUNCH_TIMEOUT / 2, f"start took {start_seconds:.1f} s"


def test_a_forged_answer_never_points_a_session_at_another_kernel(
    gateway: Gateway, attacker: GatewayKernelSession
) -> None:
    victim_id = str(uuid.uuid4())
    start_forging(attacker, victim_id, 4)

    # The victim's launcher answers 2 s late: the forged answers are there first.
    with session(gateway, KERNEL_ID=victim_id, KERNEL_TEST_LAUNCH_DELAY="2") as victim:
        whoami = victim.execute("import os; print(os.environ['KERNEL_ID'], end='')")
    assert whoami.stdout == victim_id  # the victim's own kernel, not the attacker's
    assert forged_answers_sent(attacker) >= 10


def test_forged_answers_from_many_kernels_never_block_a_launch(
    gateway: Gateway, attacker: GatewayKernelSession
) -> None:
    # 24 hostile kernels (addresses) know the victim's id and answer for it before its launcher
    # answers (2 s late) and while it does.
    victim_id = str(uuid.uuid4())
    start_forging(attacker, victim_id, 5, sources=24)

    with session(gateway, KERNEL_ID=victim_id, KERNEL_TEST_LAUNCH_DELAY="2") as victim:
        whoami = victim.execute("import os; print(os.environ['KERNEL_ID'], end='')")
        assert whoami.stdout == victim_id  # its own kernel, not the attacker's
    assert forged_answers_sent(attacker) >= 24 * 2 * 10


def test_forged_answers_from_many_kernels_never_block_a_restart(
    gateway: Gateway, attacker: GatewayKernelSession
) -> None:
    # The restarted launcher answers 2 s late too; 24 hostile kernels answer for the victim's
    # id from before the restart until after it.
    victim_id = str(uuid.uuid4())
    with session(gateway, KERNEL_ID=victim_id, KERNEL_TEST_LAUNCH_DELAY="2") as victim:
        victim.execute("before_restart = 1").raise_for_error()
        start_forging(attacker, victim_id, 6, sources=24)
        restart = requests.post(
            f"{gateway.http}/api/kernels/{victim_id}/restart", timeout=LAUNCH_TIMEOUT + 10
        )
        assert restart.status_code == 200, restart.text
        with session(gateway, kernel_id=victim_id) as restarted:
            # A new process of the victim's own: the variable is gone.
            check = "import os; print(os.environ['KERNEL_ID'], 'before_restart' in globals())"
            assert restarted.execute(check).stdout == f"{victim_id} False\n"
    assert forged_answers_sent(attacker) >= 24 * 2 * 10


def test_a_launch_without_its_answer_ends_at_its_timeout_and_leaves_nothing(
    gateway: Gateway, attacker: GatewayKernelSession
) -> None:
    # Its only answer is forged, from another address: the launch must not take it.
    silent_id = str(uuid.uuid4())
    start_forging(attacker, silent_id, 6)

    started = time.monotonic()
    env = {"KERNEL_ID": silent_id, "KERNEL_LAUNCH_TIMEOUT": "3", "KERNEL_USERNAME": "tester"}
    response = requests.post(
        gateway.http + "/api/kernels",
        json={"name": "silent-python", "env": env},
        timeout=LAUNCH_TIMEOUT + 10,
    )
    failed_after = time.monotonic() - started

    assert response.status_code == 500, response.text
    assert "launch timeout" in response.json()["reason"]
    assert 3 <= failed_after < 10
    assert silent_id not in kernel_ids(gateway)  # not listed, in `starting` or any state
    leftovers = [
        pid for pid in os.listdir("/proc") if pid.isdigit() and silent_id.encode() in _cmdline(pid)
    ]
    assert leftovers == []  # the silent kernel's process was killed
    assert forged_answers_sent(attacker) >= 10


def _cmdline(pid: str) -> bytes:
    try:
        return Path("/proc", pid, "cmdline").read_bytes()
    except OSError:
        return b""


def test_a_gateway_restored_from_persisted_sessions_still_receives_launch_responses(
    kernelspecs: Path, tmp_path: Path
) -> None:
    # Restoring persisted sessions creates the response manager before the gateway's event loop
    # runs (EG does it in initialize()); the manager must serve once the loop starts.
    env = gateway_env(
        kernelspecs, SANDBOX_SESSION_PERSISTENCE="true", SANDBOX_SESSION_ROOT=str(tmp_path)
    )
    first = Gateway(env=env).start()
    kernel_id = str(uuid.uuid4())
    try:
        start_env = {"KERNEL_ID": kernel_id, "KERNEL_USERNAME": "tester"}
        body = {"name": "detached-python", "env": start_env}
        requests.post(first.http + "/api/kernels", json=body, timeout=30).raise_for_status()
        with session(first, kernel_id=kernel_id) as kernel:
            kernel.execute("x = 42").raise_for_error()
        first.crash()
        second = Gateway(env=env).start()
        try:
            assert kernel_id in kernel_ids(second)
            with session(second, kernel_id=kernel_id) as restored:
                assert restored.execute("x").execute_result == {"text/plain": "42"}
            with session(second) as fresh:
                assert fresh.execute("6 * 7").execute_result == {"text/plain": "42"}
        finally:
            second.stop()
    finally:
        first.stop()
        for pid in os.listdir("/proc"):
            if pid.isdigit() and kernel_id.encode() in _cmdline(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
