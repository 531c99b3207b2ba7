"""The in-container kernel launcher of every kernel image that has no launcher of its own.

usage: python3 -I launch_kernel.py -- KERNEL_ARGV...   (``{connection_file}`` in it is replaced)

Enterprise Gateway's protocol for a remote kernel, as gateway_provisioners' Python launcher
speaks it:

1. pick five kernel ports and a communication port, within ``PORT_RANGE`` (``lower..upper``;
   ``0..0``: any), and write the kernel's connection file (0600, in ``JUPYTER_RUNTIME_DIR``);
2. send the connection info, plus ``pid``, ``pgid``, ``comm_port`` and ``kernel_id``, to
   ``RESPONSE_ADDRESS`` (``ip:port``) encrypted as a version-1 answer: the JSON, AES-128-ECB
   under a fresh key, that key RSA-encrypted (PKCS#1 v1.5) with ``PUBLIC_KEY``, all base64;
3. serve the communication port, where the gateway sends ``{"signum": n}`` (delivered to the
   kernel: interrupts, and the poll ``signum`` 0) and ``{"shutdown": 1}``.

The kernel itself is this process: after forking the listener (steps 2 and 3) it execs
``KERNEL_ARGV``, so the pid the gateway is given is the kernel's, docker-init delivers the
container's signals to it, and the kernel's exit ends the container.  The launch variables
(``PUBLIC_KEY``, ``RESPONSE_ADDRESS``, ``PORT_RANGE``) are not passed on to the kernel: user code
has no use for them.  CurveZMQ transport encryption is not offered: a launch that requires it
fails here instead of running in the clear.

Dependencies: the standard library and pycryptodomex (``Cryptodome``).
"""

from __future__ import annotations

import base64
import json
import os
import random
import secrets
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from Cryptodome.Cipher import AES, PKCS1_v1_5
from Cryptodome.PublicKey import RSA
from Cryptodome.Random import get_random_bytes
from Cryptodome.Util.Padding import pad

LAUNCHER_VERSION = 1
PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port")
LAUNCH_VARIABLES = ("PUBLIC_KEY", "RESPONSE_ADDRESS", "PORT_RANGE", "TRANSPORT_ENCRYPTION")
PLACEHOLDER = "{connection_file}"
BIND_ATTEMPTS = 20
# A request on the communication port is a few bytes of JSON; anything longer is not one.
MAX_REQUEST_BYTES = 4096
# Seconds between the listener's checks that the kernel is still there.
ORPHAN_CHECK = 2.0


class LaunchError(Exception):
    """The launch cannot go on; the message says why (and the container exits 2)."""


def port_range(text: str) -> tuple[int, int]:
    lower, sep, upper = text.partition("..")
    if not sep or not lower.isdigit() or not upper.isdigit():
        raise LaunchError(f"PORT_RANGE must be lower..upper, got {text!r}")
    low, high = int(lower), int(upper)
    if (low, high) != (0, 0) and not 1024 <= low <= high <= 65535:
        raise LaunchError(f"PORT_RANGE must be 0..0 or within 1024..65535, got {text!r}")
    return low, high


def response_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise LaunchError(f"RESPONSE_ADDRESS must be ip:port, got {text!r}")
    return host, int(port)


def bind_ports(count: int, low: int, high: int) -> list[socket.socket]:
    """``count`` listening-capable sockets bound to distinct free ports in ``low..high``."""
    bound: list[socket.socket] = []
    for _ in range(count):
        for _attempt in range(BIND_ATTEMPTS):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                # Every address: the gateway connects from outside the container.
                sock.bind(("0.0.0.0", 0 if high == 0 else random.randint(low, high)))
            except OSError:
                sock.close()
                continue
            bound.append(sock)
            break
        else:
            for sock in bound:
                sock.close()
            raise LaunchError(f"no free port in {low}..{high} after {BIND_ATTEMPTS} attempts")
    return bound


def connection_info(ports: Sequence[int]) -> dict[str, Any]:
    info: dict[str, Any] = dict(zip(PORT_NAMES, ports, strict=True))
    info.update(
        ip="0.0.0.0",
        transport="tcp",
        signature_scheme="hmac-sha256",
        key=secrets.token_hex(32),
        kernel_name="",
    )
    return info


def write_connection_file(directory: Path, kernel_id: str, info: Mapping[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"kernel-{kernel_id}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(dict(info), handle)
    return path


def encrypt(payload: bytes, public_key: str) -> bytes:
    """A version-1 answer: ``payload`` under a fresh AES key, that key under the gateway's."""
    aes_key = get_random_bytes(16)
    body = AES.new(aes_key, AES.MODE_ECB).encrypt(pad(payload, 16))
    try:
        rsa_key = RSA.import_key(base64.b64decode(public_key))
    except (ValueError, IndexError, TypeError) as exc:
        raise LaunchError(f"PUBLIC_KEY is not a base64 RSA public key ({exc})") from None
    wrapped = PKCS1_v1_5.new(rsa_key).encrypt(aes_key)
    answer = {
        "version": LAUNCHER_VERSION,
        "key": base64.b64encode(wrapped).decode(),
        "conn_info": base64.b64encode(body).decode(),
    }
    return base64.b64encode(json.dumps(answer).encode())


def send_answer(address: tuple[str, int], answer: bytes) -> None:
    with socket.create_connection(address, timeout=30) as conn:
        conn.sendall(answer)


def read_request(conn: socket.socket) -> dict[str, Any] | None:
    """One request from the gateway: JSON sent whole, then the connection closed."""
    conn.settimeout(5)
    data = b""
    while len(data) <= MAX_REQUEST_BYTES:
        chunk = conn.recv(1024)
        if not chunk:
            break
        data += chunk
    try:
        request = json.loads(data)
    except ValueError:
        return None
    return request if isinstance(request, dict) else None


def serve(comm: socket.socket, kernel_pid: int) -> None:
    """Deliver the gateway's signals to the kernel until a shutdown request or its exit."""
    comm.settimeout(ORPHAN_CHECK)
    while os.getppid() == kernel_pid:  # the kernel is the listener's parent until it exits
        try:
            conn, _peer = comm.accept()
        except OSError:
            continue
        with conn:
            try:
                request = read_request(conn)
            except OSError:
                continue
        if request is None:
            continue
        signum = request.get("signum")
        if isinstance(signum, int) and signum in signal.valid_signals():
            try:
                os.kill(kernel_pid, signum)
            except ProcessLookupError:
                return
        if request.get("shutdown"):
            return


def listen(comm: socket.socket, kernel_pid: int, answer: bytes, address: tuple[str, int]) -> None:
    """The listener process: answer the gateway, then serve its requests."""
    try:
        send_answer(address, answer)
    except OSError as exc:
        print(f"launch_kernel: cannot reach the gateway at {address}: {exc}", file=sys.stderr)
        os.kill(kernel_pid, signal.SIGTERM)
        return
    serve(comm, kernel_pid)


def kernel_argv(argv: Sequence[str], connection_file: Path) -> list[str]:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        raise LaunchError("no kernel command given (usage: launch_kernel.py -- KERNEL_ARGV...)")
    if not any(PLACEHOLDER in arg for arg in argv):
        raise LaunchError(f"the kernel command names no {PLACEHOLDER}")
    return [arg.replace(PLACEHOLDER, str(connection_file)) for arg in argv]


def prepare(argv: Sequence[str], env: Mapping[str, str]) -> tuple[list[str], socket.socket, bytes]:
    """Everything before the fork: the kernel's argv, the bound comm socket, the answer."""
    for name in ("KERNEL_ID", "RESPONSE_ADDRESS", "PUBLIC_KEY"):
        if not env.get(name):
            raise LaunchError(f"{name} is required")
    if env.get("TRANSPORT_ENCRYPTION", "").lower() == "required":
        raise LaunchError("TRANSPORT_ENCRYPTION=required: this launcher offers no CurveZMQ")
    kernel_id = env["KERNEL_ID"]
    if not kernel_id.replace("-", "").isalnum():
        raise LaunchError(f"KERNEL_ID is not a kernel id: {kernel_id!r}")
    low, high = port_range(env.get("PORT_RANGE", "0..0"))
    response_address(env["RESPONSE_ADDRESS"])
    sockets = bind_ports(len(PORT_NAMES) + 1, low, high)
    comm = sockets.pop()
    comm.listen(4)
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()  # the kernel binds them right after the exec
    info = connection_info(ports)
    runtime = Path(env.get("JUPYTER_RUNTIME_DIR") or "/tmp/jupyter-runtime")
    path = write_connection_file(runtime, kernel_id, info)
    pid = os.getpid()
    answer = dict(info, pid=pid, pgid=os.getpgid(pid), comm_port=comm.getsockname()[1])
    answer["kernel_id"] = kernel_id
    return kernel_argv(argv, path), comm, encrypt(json.dumps(answer).encode(), env["PUBLIC_KEY"])


def main(argv: Sequence[str] | None = None) -> int:
    env = dict(os.environ)
    try:
        command, comm, answer = prepare(sys.argv[1:] if argv is None else argv, env)
    except LaunchError as exc:
        print(f"launch_kernel: {exc}", file=sys.stderr)
        return 2
    address = response_address(env["RESPONSE_ADDRESS"])
    kernel_pid = os.getpid()
    listener = os.fork()
    if listener == 0:
        try:
            listen(comm, kernel_pid, answer, address)
        finally:
            os._exit(0)
    comm.close()
    # ipykernel-based kernels exit when JPY_PARENT_PID is no longer their parent; here the
    # container's lifetime bounds the kernel's.
    for name in (*LAUNCH_VARIABLES, "JPY_PARENT_PID"):
        env.pop(name, None)
    workdir = env.get("KERNEL_WORKING_DIR")
    if workdir and os.path.isdir(workdir):
        os.chdir(workdir)
    try:
        os.execvpe(command[0], command, env)
    except OSError as exc:
        os.kill(listener, signal.SIGKILL)
        os.waitpid(listener, 0)
        print(f"launch_kernel: cannot run {command[0]}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
