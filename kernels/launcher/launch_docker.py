"""Start one kernel in its own hardened Docker container (run by Enterprise Gateway).

Enterprise Gateway's DockerProcessProxy runs a kernelspec's ``argv`` inside the gateway container
and then waits for a container labelled ``kernel_id=<id>`` to report the kernel's connection
info to the gateway's response address.  This launcher creates and starts that container and
exits; it replaces gateway_provisioners' ``launch_docker.py`` because that one

* copies the gateway's whole environment into the kernel (every gateway secret would be readable
  by untrusted code) and pops ``PATH`` unconditionally (a KeyError: EG does not pass it),
* reads ``DOCKER_MODE``/``GP_DOCKER_MODE`` while EG 3.3 sets ``EG_DOCKER_MODE`` (so it ran in
  swarm mode),
* applies no isolation at all.

Only the standard library is used: the Docker Engine API is spoken over the unix socket, which
keeps the launcher's start-up (it is on every kernel's cold-start path) to a few milliseconds
instead of the ~0.2 s that importing the ``docker`` SDK costs.

Settings come from the launcher's environment.  EG builds that environment from the kernelspec's
``env`` stanza, the client's ``KERNEL_*`` variables and the gateway variables listed in
``EG_INHERITED_ENVS``; the ``SANDBOX_*`` names below are deliberately not ``KERNEL_*`` so that a
client cannot loosen its own limits.

=============================== ================================= ===============================
variable                        meaning                           default
=============================== ================================= ===============================
SANDBOX_KERNEL_MEMORY           memory limit (swap disabled)      512m
SANDBOX_KERNEL_CPUS             CPU limit (fractional CPUs)       1
SANDBOX_KERNEL_PIDS             pids limit                        256
SANDBOX_KERNEL_TMP_SIZE         size of each tmpfs (/tmp, home)   64m
SANDBOX_KERNEL_USER             uid:gid of the kernel process     1000:100
SANDBOX_SHARED_VOLUME           named volume at /data/shared      mini-jupyter-sandbox-shared
SANDBOX_ALLOWED_KERNEL_IMAGES   comma list of images a client     the kernelspec's image only
                                may select with KERNEL_IMAGE
SANDBOX_DOCKER_SOCKET           Docker Engine socket              /var/run/docker.sock
EG_DOCKER_NETWORK               network the kernel joins (set     bridge
                                by EG from the gateway's env)
=============================== ================================= ===============================
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import socket
import sys
from collections.abc import Mapping
from typing import Any

DOCKER_API = "/v1.41"  # Docker 20.10; newer engines keep serving it.
SHARED_MOUNT = "/data/shared"
KERNEL_HOME = "/home/jovyan"
CONTAINER_LABEL_APP = "mini-jupyter-sandbox"

# KERNEL_* variables that steer the gateway or this launcher; they are consumed here and never
# reach the kernel (a client could otherwise, e.g., pick the container's uid).
_LAUNCH_CONTROL_VARS = frozenset(
    {
        "KERNEL_IMAGE",
        "KERNEL_EXECUTOR_IMAGE",
        "KERNEL_UID",
        "KERNEL_GID",
        "KERNEL_LAUNCH_TIMEOUT",
        "KERNEL_WORKING_DIR",
        "KERNEL_GATEWAY",
        "KERNEL_NAMESPACE",
        "KERNEL_SERVICE_ACCOUNT_NAME",
    }
)
_ENV_NAME = re.compile(r"^KERNEL_[A-Z0-9_]+$")
_SIZE = re.compile(r"^(\d+)([bkmg]?)$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


class LaunchError(RuntimeError):
    """The kernel container could not be created; the message is shown in the gateway log."""


def parse_size(text: str) -> int:
    """'512m' -> bytes (Docker's units: b, k, m, g; powers of 1024)."""
    match = _SIZE.match(text.strip())
    if not match:
        raise LaunchError(f"invalid size {text!r} (expected e.g. 512m, 1g)")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def sanitize_name(text: str) -> str:
    """Docker container names allow [a-zA-Z0-9][a-zA-Z0-9_.-]; KERNEL_USERNAME is client input."""
    cleaned = re.sub(r"[^a-zA-Z0-9_.-]", "-", text).strip("-_.")
    return cleaned[:32] or "kernel"


def kernel_environment(
    env: Mapping[str, str],
    *,
    kernel_id: str,
    port_range: str,
    response_address: str,
    public_key: str,
    kernel_class_name: str | None,
    transport_encryption: str | None,
) -> dict[str, str]:
    """The kernel container's whole environment: what the in-container launcher needs, plus the
    client's own ``KERNEL_*`` variables.  Nothing else of the gateway's environment passes."""
    kernel_env = {
        name: value
        for name, value in env.items()
        if _ENV_NAME.match(name) and name not in _LAUNCH_CONTROL_VARS
    }
    kernel_env.update(
        {
            "KERNEL_ID": kernel_id,
            "PORT_RANGE": port_range,
            "RESPONSE_ADDRESS": response_address,
            "PUBLIC_KEY": public_key,
            "KERNEL_SPARK_CONTEXT_INIT_MODE": "none",
        }
    )
    if kernel_class_name:
        kernel_env["KERNEL_CLASS_NAME"] = kernel_class_name
    if transport_encryption:
        kernel_env["TRANSPORT_ENCRYPTION"] = transport_encryption
    return kernel_env


def container_spec(
    env: Mapping[str, str],
    *,
    kernel_id: str,
    image: str,
    kernel_env: Mapping[str, str],
) -> dict[str, Any]:
    """The Docker Engine API body for POST /containers/create, hardening included."""
    memory = parse_size(env.get("SANDBOX_KERNEL_MEMORY", "512m"))
    cpus = float(env.get("SANDBOX_KERNEL_CPUS", "1"))
    pids = int(env.get("SANDBOX_KERNEL_PIDS", "256"))
    tmp_size = env.get("SANDBOX_KERNEL_TMP_SIZE", "64m")
    parse_size(tmp_size)  # validate before it reaches a mount option string
    user = env.get("SANDBOX_KERNEL_USER", "1000:100")
    uid, _, gid = user.partition(":")
    if not uid.isdigit() or int(uid) == 0 or (gid and not gid.isdigit()):
        raise LaunchError(f"SANDBOX_KERNEL_USER must be a non-root numeric uid[:gid], got {user!r}")
    network = env.get("EG_DOCKER_NETWORK", "bridge")
    volume = env.get("SANDBOX_SHARED_VOLUME", "mini-jupyter-sandbox-shared")
    username = sanitize_name(env.get("KERNEL_USERNAME", "kernel"))
    name = f"{username}-{kernel_id}"
    tmpfs_opts = f"rw,nosuid,nodev,size={tmp_size}"
    host_config: dict[str, Any] = {
        "NetworkMode": network,
        # The container is gone when the kernel exits; EG finds it by label while it runs.
        "AutoRemove": env.get("SANDBOX_REMOVE_CONTAINER", "true").lower() == "true",
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges:true"],
        "Privileged": False,
        "ReadonlyRootfs": True,
        "Tmpfs": {
            "/tmp": tmpfs_opts,
            # ipykernel, IPython and matplotlib write below $HOME; a fresh private tmpfs keeps
            # the root read-only and leaves nothing behind.
            KERNEL_HOME: f"{tmpfs_opts},uid={uid},gid={gid or uid},mode=0700",
        },
        "PidsLimit": pids,
        "Memory": memory,
        "MemorySwap": memory,  # equal to Memory: no swap, so a memory bomb is killed, not slowed
        "NanoCpus": int(cpus * 1e9),
        # docker-init as PID 1 reaps what user code forks and forwards signals to the kernel.
        "Init": True,
        "Mounts": [{"Type": "volume", "Source": volume, "Target": SHARED_MOUNT}],
        "IpcMode": "private",
    }
    return {
        "Image": image,
        "Hostname": name[:63],
        "User": user,
        "Env": [f"{key}={value}" for key, value in sorted(kernel_env.items())],
        "Labels": {
            # EG's DockerProcessProxy polls and kills the container through this label.
            "kernel_id": kernel_id,
            "component": "kernel",
            "app": CONTAINER_LABEL_APP,
            f"{CONTAINER_LABEL_APP}.kernel-username": username,
        },
        "WorkingDir": KERNEL_HOME,
        "HostConfig": host_config,
        "NetworkingConfig": {"EndpointsConfig": {network: {}}},
        "_name": name,
    }


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._socket_path)
        self.sock = sock


class DockerEngine:
    """The two Docker Engine API calls this launcher needs."""

    def __init__(self, socket_path: str, timeout: float = 30.0) -> None:
        self._socket_path = socket_path
        self._timeout = timeout

    def _request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        conn = _UnixHTTPConnection(self._socket_path, self._timeout)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            conn.request(method, DOCKER_API + path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
        finally:
            conn.close()

    def run(self, spec: dict[str, Any]) -> str:
        """Create and start a container; returns its id."""
        body = dict(spec)
        name = body.pop("_name")
        status, reply = self._request("POST", f"/containers/create?name={name}", body)
        if status != 201:
            raise LaunchError(f"creating container {name} failed ({status}): {_message(reply)}")
        container_id = str(reply["Id"])
        status, reply = self._request("POST", f"/containers/{container_id}/start")
        if status not in (204, 304):
            self._request("DELETE", f"/containers/{container_id}?force=true")
            raise LaunchError(f"starting container {name} failed ({status}): {_message(reply)}")
        return container_id


def _message(reply: Any) -> str:
    if isinstance(reply, dict) and "message" in reply:
        return str(reply["message"])
    return str(reply)


def allowed_images(env: Mapping[str, str], default_image: str | None) -> set[str]:
    listed = {item.strip() for item in env.get("SANDBOX_ALLOWED_KERNEL_IMAGES", "").split(",")}
    listed.discard("")
    if default_image:
        listed.add(default_image)
    return listed


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # EG substitutes {kernel_id}, {port_range}, {response_address} and {public_key} in argv.
    parser.add_argument("--kernel-id", required=True)
    parser.add_argument("--port-range", default="0..0")
    parser.add_argument("--response-address", required=True)
    parser.add_argument("--public-key", required=True)
    parser.add_argument("--kernel-class-name")
    parser.add_argument("--transport-encryption")
    parser.add_argument(
        "--image", help="the kernelspec's image; the only one allowed unless listed otherwise"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    env = os.environ if env is None else env
    mode = env.get("EG_DOCKER_MODE", env.get("DOCKER_MODE", "docker")).lower()
    if mode != "docker":
        print(f"launch_docker: unsupported EG_DOCKER_MODE {mode!r}", file=sys.stderr)
        return 2
    image = env.get("KERNEL_IMAGE") or args.image
    if not image:
        print("launch_docker: no kernel image (KERNEL_IMAGE / --image)", file=sys.stderr)
        return 2
    if image not in allowed_images(env, args.image):
        # KERNEL_IMAGE is client input: without this check any local image could be started.
        print(f"launch_docker: image {image!r} is not allowed", file=sys.stderr)
        return 2
    kernel_env = kernel_environment(
        env,
        kernel_id=args.kernel_id,
        port_range=args.port_range,
        response_address=args.response_address,
        public_key=args.public_key,
        kernel_class_name=args.kernel_class_name,
        transport_encryption=args.transport_encryption,
    )
    try:
        spec = container_spec(env, kernel_id=args.kernel_id, image=image, kernel_env=kernel_env)
        engine = DockerEngine(env.get("SANDBOX_DOCKER_SOCKET", "/var/run/docker.sock"))
        container_id = engine.run(spec)
    except (LaunchError, OSError, ValueError) as exc:
        print(f"launch_docker: kernel {args.kernel_id}: {exc}", file=sys.stderr)
        return 1
    print(f"launch_docker: kernel {args.kernel_id} started in container {container_id[:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
