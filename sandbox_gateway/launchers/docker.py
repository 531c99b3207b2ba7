"""Start one kernel in its own hardened Docker container on its own network (run by Enterprise
Gateway).

Enterprise Gateway's process proxy (``sandbox_gateway.proxies.docker``) runs a kernelspec's
``argv`` inside the gateway container and then waits for a container labelled ``kernel_id=<id>``
to report the kernel's connection info to the gateway's response address.
This launcher creates the kernel's private network, attaches the gateway to it, then creates and
starts the container, and exits.  It replaces gateway_provisioners' ``launch_docker.py`` because
that one copies the gateway's whole environment into the kernel (every gateway secret would be
readable by untrusted code), reads ``DOCKER_MODE`` while EG 3.3 sets ``EG_DOCKER_MODE``, and
applies no isolation at all.
The rules it shares with the Kubernetes launcher and the gateway (sizes, kernel ids, the
variables a kernel is given, container names) are in ``sandbox_gateway.launchers.rules``.

Containment between kernels is structural: each kernel sits alone on an internal bridge network
(a /28 from ``SANDBOX_KERNEL_SUBNETS``, no host address, no route out) whose only other member is
the gateway.  Two kernels share no network, so no packet can pass between them whatever one
knows of the other.  What a kernel may reach on the gateway (its launch-response port, nothing
else) is enforced by the gateway container's own firewall (``images/gateway/entrypoint.sh``).

A launch owns exactly what it creates, and joins nothing else.  It refuses when a container
labelled with its kernel id is already starting or running (a second start with that id, or a
restart whose old container is still there), and it never reuses a network: the kernel's network
is created fresh, a name already taken refuses the launch, and the container joins that network
by the id Docker gave this launch.  So a second start with someone else's kernel id cannot put a
container on its private network, and two launches of one id cannot both end with a running
container (each checks again once its container exists; the later of the two refuses).  A
failed launch removes its own container and network, never anything it found.  A restart reuses
nothing either: the gateway removes the old network before it relaunches
(``sandbox_gateway.proxies.docker.SandboxDockerProcessProxy``).

Every setting fails closed: a value meaning "unlimited" (memory ``0``, CPUs ``0``, pids ``-1``)
or a network that cannot be created refuses the launch; nothing falls back to Docker's
``bridge``.  Only the standard library is used: the Docker Engine API is spoken over the unix
socket, which keeps the launcher's start-up (it is on every kernel's cold-start path) to a few
milliseconds instead of the ~0.2 s that importing the ``docker`` SDK costs.

Settings come from the launcher's environment.  EG builds that environment from the kernelspec's
``env`` stanza, the client's ``KERNEL_*`` variables and the gateway variables listed in
``EG_INHERITED_ENVS``; the gateway's config adds every ``SANDBOX_*`` variable of its own
environment to that list, so they reach the launcher whether or not a client sends ``env``.  They
are deliberately not ``KERNEL_*`` so that a client cannot loosen its own limits.

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
SANDBOX_REMOVE_CONTAINER        remove the container on exit      true
SANDBOX_KERNEL_SUBNETS          address pool of kernel networks   10.213.0.0/16
SANDBOX_GATEWAY_CONTAINER       the gateway's container id        (required; set by the gateway)
SANDBOX_DEPLOYMENT              label that scopes clean-up        (required; set by the gateway)
SANDBOX_EGRESS_CONTAINER        the egress process's container    none: no egress (set by the
                                                                  gateway when egress is on)
SANDBOX_EGRESS_CA_VOLUME        named volume of the egress CA     mini-jupyter-sandbox-egress-ca
=============================== ================================= ===============================

With egress on, the egress container joins every kernel network too, at the network's last
address (``egress_address``), and the kernel's DNS and proxy variables point there.  A kernel
without a grant gets nothing from it (no name resolves, every connection is refused); one with a
grant gets what its list allows.  It joins every network, not only those of kernels that ask,
because a warm kernel takes its list at claim, when its container and network exist already.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import math
import os
import random
import re
import socket
import sys
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sandbox_gateway.launchers import rules

DOCKER_API = "/v1.41"  # Docker 20.10; newer engines keep serving it.
SHARED_MOUNT = "/data/shared"
KERNEL_HOME = "/home/jovyan"
CONTAINER_LABEL_APP = "mini-jupyter-sandbox"
DEPLOYMENT_LABEL = f"{CONTAINER_LABEL_APP}.deployment"
KERNEL_NETWORK_PREFIX = 28  # 16 addresses: Docker's reserved gateway, the kernel, the gateway
NETWORK_ATTEMPTS = 8
OOM_SCORE_ADJ = 1000  # the highest: first to go when the host is out of memory

_CONTAINER_REF = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
# A container in one of these states holds (or is about to hold) the kernel's label and network;
# "exited", "dead" and "removing" ones are a previous kernel's remains, off every network.
_LIVE_STATES = frozenset({"created", "running", "restarting", "paused"})


class LaunchError(RuntimeError):
    """The kernel container could not be created; the message is shown in the gateway log."""


@dataclass(frozen=True)
class Settings:
    """The launcher's settings, each checked; building one refuses anything that loosens a box."""

    memory: int
    cpus: float
    pids: int
    tmp_size: str
    uid: str
    gid: str
    shared_volume: str
    docker_socket: str
    remove_container: bool
    subnets: ipaddress.IPv4Network
    gateway_container: str
    deployment: str
    egress_container: str = ""
    egress_ca_volume: str = "mini-jupyter-sandbox-egress-ca"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        memory = _size(env, "SANDBOX_KERNEL_MEMORY", rules.DEFAULT_KERNEL_MEMORY)
        if memory < rules.MIN_KERNEL_MEMORY:
            raise LaunchError(
                f"SANDBOX_KERNEL_MEMORY must be at least 64m (0 would mean unlimited), "
                f"got {env.get('SANDBOX_KERNEL_MEMORY')!r}"
            )
        cpus = _number(env, "SANDBOX_KERNEL_CPUS", "1", float)
        if not (math.isfinite(cpus) and cpus > 0):
            raise LaunchError(
                f"SANDBOX_KERNEL_CPUS must be > 0 (0 would mean unlimited), got {cpus}"
            )
        pids = _number(env, "SANDBOX_KERNEL_PIDS", "256", int)
        if pids <= 0:
            raise LaunchError(
                f"SANDBOX_KERNEL_PIDS must be > 0 (-1 and 0 mean unlimited), got {pids}"
            )
        tmp_size = env.get("SANDBOX_KERNEL_TMP_SIZE", "64m")
        if _size(env, "SANDBOX_KERNEL_TMP_SIZE", "64m") <= 0:  # also guards a mount option string
            raise LaunchError(f"SANDBOX_KERNEL_TMP_SIZE must be > 0, got {tmp_size!r}")
        user = env.get("SANDBOX_KERNEL_USER", "1000:100")
        uid, _, gid = user.partition(":")
        if not uid.isdigit() or int(uid) == 0 or (gid and not gid.isdigit()):
            raise LaunchError(
                f"SANDBOX_KERNEL_USER must be a non-root numeric uid[:gid], got {user!r}"
            )
        remove = env.get("SANDBOX_REMOVE_CONTAINER", "true").strip().lower()
        if remove not in ("true", "false"):
            raise LaunchError(f"SANDBOX_REMOVE_CONTAINER must be true or false, got {remove!r}")
        pool = env.get("SANDBOX_KERNEL_SUBNETS", "10.213.0.0/16")
        try:
            subnets = ipaddress.IPv4Network(pool.strip())
        except ValueError as exc:
            raise LaunchError(f"SANDBOX_KERNEL_SUBNETS is not an IPv4 network: {exc}") from None
        if subnets.prefixlen > KERNEL_NETWORK_PREFIX:
            raise LaunchError(f"SANDBOX_KERNEL_SUBNETS {pool!r} is smaller than one /28")
        gateway = env.get("SANDBOX_GATEWAY_CONTAINER", "")
        deployment = env.get("SANDBOX_DEPLOYMENT", "")
        for name, value in (
            ("SANDBOX_GATEWAY_CONTAINER", gateway),
            ("SANDBOX_DEPLOYMENT", deployment),
        ):
            if not _CONTAINER_REF.match(value):
                raise LaunchError(f"{name} is missing or invalid ({value!r}); the gateway sets it")
        egress = env.get("SANDBOX_EGRESS_CONTAINER", "")
        if egress and not _CONTAINER_REF.match(egress):
            raise LaunchError(f"SANDBOX_EGRESS_CONTAINER is invalid ({egress!r})")
        ca_volume = env.get("SANDBOX_EGRESS_CA_VOLUME", "mini-jupyter-sandbox-egress-ca")
        return cls(
            memory=memory,
            cpus=cpus,
            pids=pids,
            tmp_size=tmp_size,
            uid=uid,
            gid=gid or uid,
            shared_volume=env.get("SANDBOX_SHARED_VOLUME", "mini-jupyter-sandbox-shared"),
            docker_socket=env.get("SANDBOX_DOCKER_SOCKET", "/var/run/docker.sock"),
            remove_container=remove == "true",
            subnets=subnets,
            gateway_container=gateway,
            deployment=deployment,
            egress_container=egress,
            egress_ca_volume=ca_volume,
        )


def _size(env: Mapping[str, str], name: str, default: str) -> int:
    try:
        return rules.parse_size(env.get(name, default))
    except rules.RuleError as exc:
        raise LaunchError(f"{name}: {exc}") from None


def _number(env: Mapping[str, str], name: str, default: str, kind: type) -> Any:
    text = env.get(name, default)
    try:
        return kind(text)
    except ValueError:
        raise LaunchError(f"{name} must be a number, got {text!r}") from None


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
    client's own ``KERNEL_*`` variables and those the kernelspec's ``SANDBOX_CLIENT_ENVS`` names
    (``rules.request_variables``, as the Kubernetes launcher and a warm claim apply it).
    Nothing else of the gateway's environment passes."""
    client_envs = rules.client_env_names(env.get("SANDBOX_CLIENT_ENVS", ""))
    kernel_env = rules.request_variables(env, client_envs)
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


def network_name(kernel_id: str) -> str:
    return f"{CONTAINER_LABEL_APP}-kernel-{kernel_id}"


def egress_address(subnet: ipaddress.IPv4Network) -> str:
    """The egress container's address on a kernel network: its last one, which Docker hands to
    no one else (it allocates from the bottom, and a network holds three members)."""
    return str(subnet[-2])


def container_name(env: Mapping[str, str], kernel_id: str) -> str:
    return rules.container_name(env.get("KERNEL_USERNAME", "kernel"), kernel_id)


def network_spec(settings: Settings, *, kernel_id: str, subnet: str) -> dict[str, Any]:
    """The Docker Engine API body for POST /networks/create: the kernel's private network."""
    return {
        "Name": network_name(kernel_id),
        "CheckDuplicate": True,
        "Driver": "bridge",
        # No route out, and no host address on the bridge either, so a kernel cannot reach the
        # Docker host's services through a default gateway.
        "Internal": True,
        "Attachable": False,
        "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Config": [{"Subnet": subnet}]},
        "Options": {"com.docker.network.bridge.inhibit_ipv4": "true"},
        "Labels": {
            "app": CONTAINER_LABEL_APP,
            "component": "kernel-network",
            "kernel_id": kernel_id,
            DEPLOYMENT_LABEL: settings.deployment,
        },
    }


def container_spec(
    settings: Settings,
    *,
    kernel_id: str,
    image: str,
    kernel_env: Mapping[str, str],
    network: str,
    username: str,
    egress: str | None = None,
) -> dict[str, Any]:
    """The Docker Engine API body for POST /containers/create, hardening included; ``egress``:
    the egress container's address on ``network``, where the kernel's DNS goes."""
    tmpfs_opts = f"rw,nosuid,nodev,size={settings.tmp_size}"
    host_config: dict[str, Any] = {
        "NetworkMode": network,
        # The container is gone when the kernel exits; EG finds it by label while it runs.
        "AutoRemove": settings.remove_container,
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges:true"],
        "Privileged": False,
        "ReadonlyRootfs": True,
        "Tmpfs": {
            "/tmp": tmpfs_opts,
            # ipykernel, IPython and matplotlib write below $HOME; a fresh private tmpfs keeps
            # the root read-only and leaves nothing behind.
            KERNEL_HOME: f"{tmpfs_opts},uid={settings.uid},gid={settings.gid},mode=0700",
        },
        "PidsLimit": settings.pids,
        "Memory": settings.memory,
        "MemorySwap": settings.memory,  # no swap, so a memory bomb is killed, not slowed
        # The cap overcommits memory (admission.limits): if the host itself runs out, the OOM
        # killer is to prefer a kernel to the gateway, the file server or the notebook (at 0; a
        # kernel cannot lower its own below that).
        "OomScoreAdj": OOM_SCORE_ADJ,
        "NanoCpus": int(settings.cpus * 1e9),
        # docker-init as PID 1 reaps what user code forks and forwards signals to the kernel.
        "Init": True,
        "Mounts": [{"Type": "volume", "Source": settings.shared_volume, "Target": SHARED_MOUNT}],
        "IpcMode": "private",
        # IPv4 only: no link-local IPv6 neighbour on the kernel's network either.
        "Sysctls": {"net.ipv6.conf.all.disable_ipv6": "1"},
    }
    if egress is not None:
        # Docker's embedded DNS still answers the network's own names (the gateway's alias); any
        # other query goes to the egress process, from the kernel's address.
        host_config["Dns"] = [egress]
        host_config["Mounts"].append(
            {
                "Type": "volume",
                "Source": settings.egress_ca_volume,
                "Target": rules.EGRESS_CA_DIR,
                "ReadOnly": True,
            }
        )
    return {
        "Image": image,
        "Hostname": f"{username}-{kernel_id}"[:63],
        "User": f"{settings.uid}:{settings.gid}",
        "Env": [f"{key}={value}" for key, value in sorted(kernel_env.items())],
        "Labels": {
            # EG's DockerProcessProxy polls and kills the container through this label.
            "kernel_id": kernel_id,
            "component": "kernel",
            "app": CONTAINER_LABEL_APP,
            # The user the container was launched for.  Labels cannot change, so a container
            # started for the gateway's warm pool keeps "sandbox-pool" here for good; when the
            # pool hands it to a user, the gateway renames it to what a cold start would have
            # named it (``container_name``): the owner is in the name, never in this label.
            f"{CONTAINER_LABEL_APP}.kernel-username": username,
            DEPLOYMENT_LABEL: settings.deployment,
        },
        "WorkingDir": KERNEL_HOME,
        "HostConfig": host_config,
        "NetworkingConfig": {"EndpointsConfig": {network: {}}},
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
    """The Docker Engine API calls this launcher needs."""

    def __init__(self, socket_path: str, timeout: float = 30.0) -> None:
        self._socket_path = socket_path
        self._timeout = timeout

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
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

    def create_network(
        self, settings: Settings, kernel_id: str
    ) -> tuple[str, ipaddress.IPv4Network]:
        """The kernel's own network, created now on a free /28 of the pool; returns its id and
        subnet.

        A network of that name that already exists is never reused: it belongs to another
        launch of this kernel id (a concurrent start) or to the kernel's previous container
        (its removal failed), and either way this launch's container has no business on it.
        """
        name = network_name(kernel_id)
        subnets = list(settings.subnets.subnets(new_prefix=KERNEL_NETWORK_PREFIX))
        last = ""
        for subnet in random.sample(subnets, min(NETWORK_ATTEMPTS, len(subnets))):
            spec = network_spec(settings, kernel_id=kernel_id, subnet=str(subnet))
            status, reply = self.request("POST", "/networks/create", spec)
            if status == 201:
                return str(reply["Id"]), subnet
            last = _message(reply)
            if status == 409:
                raise LaunchError(
                    f"network {name} already exists: another start of kernel {kernel_id} is "
                    f"under way, or its previous network is not removed yet ({last})"
                )
            if "overlap" not in last.lower():
                break
        raise LaunchError(f"cannot create network {name} in {settings.subnets}: {last}")

    def attach(self, network_id: str, container: str, endpoint: dict[str, Any]) -> None:
        body = {"Container": container, "EndpointConfig": endpoint}
        status, reply = self.request("POST", f"/networks/{network_id}/connect", body)
        if status != 200:
            # The network is this launch's own, created a moment ago: nothing can be on it
            # already, so any refusal is a failure.
            raise LaunchError(
                f"cannot attach {container} to network {network_id[:12]}: {_message(reply)}"
            )

    def remove_network(self, network_id: str, settings: Settings) -> None:
        """Best effort; the gateway's sweep removes what is left."""
        for container in (settings.gateway_container, settings.egress_container):
            if container:
                body = {"Container": container, "Force": True}
                self.request("POST", f"/networks/{network_id}/disconnect", body)
        self.request("DELETE", f"/networks/{network_id}")

    def kernel_containers(self, kernel_id: str) -> list[dict[str, Any]]:
        """Every container of the engine labelled with this kernel id that is not on its way out
        (Enterprise Gateway finds a kernel's container by that label alone, in any deployment)."""
        filters = json.dumps({"label": [f"kernel_id={kernel_id}"]})
        query = urllib.parse.urlencode({"all": "true", "filters": filters})
        status, reply = self.request("GET", f"/containers/json?{query}")
        if status != 200 or not isinstance(reply, list):
            raise LaunchError(f"cannot list the containers of kernel {kernel_id}: {reply}")
        return [item for item in reply if item.get("State") in _LIVE_STATES]

    def create(self, name: str, spec: dict[str, Any]) -> str:
        """Create a container (not started); returns its id."""
        query = urllib.parse.urlencode({"name": name})
        status, reply = self.request("POST", f"/containers/create?{query}", spec)
        if status != 201:
            raise LaunchError(f"creating container {name} failed ({status}): {_message(reply)}")
        return str(reply["Id"])

    def start(self, container_id: str) -> None:
        status, reply = self.request("POST", f"/containers/{container_id}/start")
        if status not in (204, 304):
            raise LaunchError(
                f"starting container {container_id[:12]} failed ({status}): {_message(reply)}"
            )


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


def launch(args: argparse.Namespace, env: Mapping[str, str]) -> str:
    """Network, gateway attachment, container; returns the container id.  Raises LaunchError."""
    mode = env.get("EG_DOCKER_MODE", env.get("DOCKER_MODE", "docker")).lower()
    if mode != "docker":
        raise LaunchError(f"unsupported EG_DOCKER_MODE {mode!r}")
    try:
        rules.check_kernel_id(args.kernel_id)
    except rules.RuleError as exc:
        raise LaunchError(str(exc)) from None
    image = env.get("KERNEL_IMAGE") or args.image
    if not image:
        raise LaunchError("no kernel image (KERNEL_IMAGE / --image)")
    if image not in allowed_images(env, args.image):
        # KERNEL_IMAGE is client input: without this check any local image could be started.
        raise LaunchError(f"image {image!r} is not allowed")
    settings = Settings.from_env(env)
    alias = args.response_address.rpartition(":")[0]
    if not alias:
        raise LaunchError(f"invalid response address {args.response_address!r}")
    kernel_env = kernel_environment(
        env,
        kernel_id=args.kernel_id,
        port_range=args.port_range,
        response_address=args.response_address,
        public_key=args.public_key,
        kernel_class_name=args.kernel_class_name,
        transport_encryption=args.transport_encryption,
    )
    engine = DockerEngine(settings.docker_socket)
    _refuse_if_running(engine, args.kernel_id, own=None)
    network_id, subnet = engine.create_network(settings, args.kernel_id)
    egress = egress_address(subnet) if settings.egress_container else None
    if egress is not None:
        kernel_env.update(rules.egress_variables(egress))
    attachments: list[tuple[str, dict[str, Any]]] = [
        (settings.gateway_container, {"Aliases": [alias]})
    ]
    if egress is not None:
        attachments.append((settings.egress_container, {"IPAMConfig": {"IPv4Address": egress}}))
    username = rules.sanitize_name(env.get("KERNEL_USERNAME", "kernel"))
    spec = container_spec(
        settings,
        kernel_id=args.kernel_id,
        image=image,
        kernel_env=kernel_env,
        # By id, not name: the container can only join the network this launch created, even
        # if that one were removed and another one of the same name made meanwhile.
        network=network_id,
        username=username,
        egress=egress,
    )
    # Attaching the gateway (and the egress container) and creating the container are
    # independent Docker calls (~50 ms each): overlap them.  The container starts only once
    # they are attached, so the kernel always finds the gateway's alias when it sends its
    # launch response.
    attach_failure: list[BaseException] = []

    def attach(container: str, endpoint: dict[str, Any]) -> None:
        try:
            engine.attach(network_id, container, endpoint)
        except BaseException as exc:  # re-raised on the main thread below
            attach_failure.append(exc)

    attaching = [
        threading.Thread(target=attach, args=attachment, name="attach")
        for attachment in attachments
    ]
    for thread in attaching:
        thread.start()
    container_id = None
    try:
        container_id = engine.create(container_name(env, args.kernel_id), spec)
        # Checked again now that this launch's container exists: of two launches of one id
        # that both passed the first check, the later one to get here sees the other's
        # container and refuses, so at most one of them starts.
        _refuse_if_running(engine, args.kernel_id, own=container_id)
        for thread in attaching:
            thread.join()
        if attach_failure:
            raise attach_failure[0]
        engine.start(container_id)
        return container_id
    except BaseException:
        for thread in attaching:
            thread.join()
        # Only what this launch created: a container or network found here is someone else's.
        if container_id is not None:
            engine.request("DELETE", f"/containers/{container_id}?force=true")
        engine.remove_network(network_id, settings)
        raise


def _refuse_if_running(engine: DockerEngine, kernel_id: str, *, own: str | None) -> None:
    others = [item for item in engine.kernel_containers(kernel_id) if item.get("Id") != own]
    if others:
        found = ", ".join(
            f"{str(item.get('Id', ''))[:12]} ({item.get('State')})" for item in others
        )
        raise LaunchError(f"kernel {kernel_id} already has a container: {found}")


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        container_id = launch(args, os.environ if env is None else env)
    except (LaunchError, OSError, ValueError) as exc:
        print(f"launch_docker: kernel {args.kernel_id}: {exc}", file=sys.stderr)
        return 1
    print(f"launch_docker: kernel {args.kernel_id} started in container {container_id[:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
