"""kernels/launcher/launch_kernel.py, the launcher of the kernels that have none of their own,
run as the kernel images run it: a real process, a real response socket, the gateway's RSA key.

The "kernel" it execs here is a small Python script that reports what it was given; the real
kernels (bash_kernel, Deno, IRkernel) are started through the real gateway in
tests/e2e/docker/test_languages.py.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from Cryptodome.Cipher import AES, PKCS1_v1_5
from Cryptodome.PublicKey import RSA
from Cryptodome.Util.Padding import unpad

pytestmark = pytest.mark.unit

LAUNCHER = Path(__file__).resolve().parents[3] / "kernels" / "launcher" / "launch_kernel.py"
KERNEL_ID = "0b4e6a52-9a7f-4c47-8f7e-3f1f0f5d2c11"
# Writes its argv, environment and working directory, then waits for signals: SIGUSR1 is noted,
# SIGTERM ends it.
FAKE_KERNEL = """
import json, os, signal, sys, time
report = sys.argv[1]
def note(signum, frame):
    open(report + '.signals', 'a').write(f'{signum}\\n')
signal.signal(signal.SIGUSR1, note)
json.dump({'argv': sys.argv, 'env': dict(os.environ), 'cwd': os.getcwd(), 'pid': os.getpid(),
           'conn': json.load(open(sys.argv[2]))}, open(report + '.tmp', 'w'))
os.rename(report + '.tmp', report)
while True:
    time.sleep(0.1)
"""


@pytest.fixture(scope="module")
def rsa_key() -> Any:
    return RSA.generate(1024)


def decrypt(private_key: Any, data: bytes) -> dict[str, Any]:
    """The gateway's reading of a version-1 answer."""
    envelope = json.loads(base64.b64decode(data))
    assert envelope["version"] == 1
    aes_key = PKCS1_v1_5.new(private_key).decrypt(base64.b64decode(envelope["key"]), None)
    plain = unpad(
        AES.new(aes_key, AES.MODE_ECB).decrypt(base64.b64decode(envelope["conn_info"])), 16
    )
    return dict(json.loads(plain))


class Gateway:
    """The response address: accepts one answer."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(20)
        self.address = f"127.0.0.1:{self.server.getsockname()[1]}"

    def answer(self) -> bytes:
        conn, _ = self.server.accept()
        with conn:
            conn.settimeout(10)
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
        return data

    def send(self, port: int, request: dict[str, Any]) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(json.dumps(request).encode())


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    gateway = Gateway()
    yield gateway
    gateway.server.close()


def environment(tmp_path: Path, gateway: Gateway, rsa_key: Any, **extra: str) -> dict[str, str]:
    public = base64.b64encode(rsa_key.publickey().export_key("DER")).decode()
    env = {
        "PATH": os.environ["PATH"],
        "KERNEL_ID": KERNEL_ID,
        "RESPONSE_ADDRESS": gateway.address,
        "PUBLIC_KEY": public,
        "PORT_RANGE": "0..0",
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JPY_PARENT_PID": "1",
        "KERNEL_USERNAME": "alice",
    }
    env.update(extra)
    return env


def launch(tmp_path: Path, env: dict[str, str], *argv: str) -> subprocess.Popen[str]:
    script = tmp_path / "kernel.py"
    script.write_text(FAKE_KERNEL)
    command = argv or (sys.executable, str(script), str(tmp_path / "report"), "{connection_file}")
    return subprocess.Popen(
        [sys.executable, "-I", str(LAUNCHER), "--", *command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> None:
    process.kill()
    process.communicate(timeout=10)


def wait_for(path: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_the_answer_is_what_the_gateway_decrypts_and_the_kernel_gets_the_file(
    tmp_path: Path, gateway: Gateway, rsa_key: Any
) -> None:
    process = launch(tmp_path, environment(tmp_path, gateway, rsa_key))
    try:
        answer = decrypt(rsa_key, gateway.answer())
        wait_for(tmp_path / "report")
        report = json.loads((tmp_path / "report").read_text())
        # The kernel is the launcher's process (exec), so the gateway signals the kernel itself.
        assert report["pid"] == answer["pid"] == process.pid
        assert answer["kernel_id"] == KERNEL_ID and answer["pgid"] == os.getpgid(process.pid)
        connection_file = Path(report["argv"][2])
        assert connection_file.parent == tmp_path / "runtime"
        assert connection_file.stat().st_mode & 0o777 == 0o600
        ports = [answer[f"{name}_port"] for name in ("shell", "iopub", "stdin", "hb", "control")]
        assert len({*ports, answer["comm_port"]}) == 6
        # The file the kernel reads holds what the gateway was told, and no launch secret.
        for key, value in report["conn"].items():
            assert answer[key] == value
        assert report["conn"]["key"] and report["conn"]["signature_scheme"] == "hmac-sha256"
        # The launch variables stay with the launcher.
        env = report["env"]
        for name in ("PUBLIC_KEY", "RESPONSE_ADDRESS", "PORT_RANGE", "JPY_PARENT_PID"):
            assert name not in env
        assert env["KERNEL_ID"] == KERNEL_ID and env["KERNEL_USERNAME"] == "alice"

        # The communication port: a signal reaches the kernel, a poll (signum 0) does nothing,
        # garbage is ignored, and the listener keeps serving.
        comm = answer["comm_port"]
        with socket.create_connection(("127.0.0.1", comm), timeout=5) as conn:
            conn.sendall(b"not json")
        gateway.send(comm, {"signum": 0})
        gateway.send(comm, {"signum": int(signal.SIGUSR1)})
        wait_for(tmp_path / "report.signals")
        assert (tmp_path / "report.signals").read_text().split() == [str(int(signal.SIGUSR1))]
        assert process.poll() is None
        gateway.send(comm, {"signum": int(signal.SIGTERM)})
        assert process.wait(timeout=10) == -signal.SIGTERM
        # The listener outlives its kernel by at most its check interval.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", comm), timeout=1).close()
            except ConnectionRefusedError:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the listener still serves after its kernel exited")
    finally:
        stop(process)


def test_ports_come_from_the_port_range(tmp_path: Path, gateway: Gateway, rsa_key: Any) -> None:
    process = launch(tmp_path, environment(tmp_path, gateway, rsa_key, PORT_RANGE="41000..41999"))
    try:
        answer = decrypt(rsa_key, gateway.answer())
        ports = [value for key, value in answer.items() if key.endswith("_port")]
        assert len(ports) == 6 and all(41000 <= port <= 41999 for port in ports)
    finally:
        stop(process)


def test_the_working_directory_is_the_clients_when_it_exists(
    tmp_path: Path, gateway: Gateway, rsa_key: Any
) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    process = launch(
        tmp_path, environment(tmp_path, gateway, rsa_key, KERNEL_WORKING_DIR=str(workdir))
    )
    try:
        gateway.answer()
        wait_for(tmp_path / "report")
        assert json.loads((tmp_path / "report").read_text())["cwd"] == str(workdir)
    finally:
        stop(process)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"KERNEL_ID": ""}, "KERNEL_ID is required"),
        ({"PUBLIC_KEY": ""}, "PUBLIC_KEY is required"),
        ({"KERNEL_ID": "../../etc/x"}, "KERNEL_ID is not a kernel id"),
        ({"PORT_RANGE": "1..2..3"}, "PORT_RANGE must be"),
        ({"PORT_RANGE": "9000..80"}, "PORT_RANGE must be"),
        ({"RESPONSE_ADDRESS": "nowhere"}, "RESPONSE_ADDRESS must be ip:port"),
        ({"PUBLIC_KEY": "bm90IGEga2V5"}, "PUBLIC_KEY is not a base64 RSA public key"),
        ({"TRANSPORT_ENCRYPTION": "required"}, "offers no CurveZMQ"),
    ],
)
def test_bad_launch_settings_fail_with_one_line_and_send_nothing(
    tmp_path: Path, gateway: Gateway, rsa_key: Any, change: dict[str, str], message: str
) -> None:
    process = launch(tmp_path, environment(tmp_path, gateway, rsa_key, **change))
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 2
    assert message in stderr and stderr.count("\n") == 1
    assert "PUBLIC_KEY=" not in stderr
    gateway.server.settimeout(0.2)
    with pytest.raises(TimeoutError):
        gateway.server.accept()
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "no kernel command given"),
        (("kernel", "--conn", "x.json"), "names no {connection_file}"),
    ],
)
def test_a_kernel_command_without_its_connection_file_is_refused(
    tmp_path: Path, gateway: Gateway, rsa_key: Any, argv: tuple[str, ...], message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-I", str(LAUNCHER), "--", *argv],
        env=environment(tmp_path, gateway, rsa_key),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 2 and message in done.stderr


def test_a_kernel_that_cannot_run_fails_the_launch(
    tmp_path: Path, gateway: Gateway, rsa_key: Any
) -> None:
    process = launch(
        tmp_path, environment(tmp_path, gateway, rsa_key), "/no/such/kernel", "{connection_file}"
    )
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 2 and "cannot run /no/such/kernel" in stderr
