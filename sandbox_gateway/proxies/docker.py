"""Docker containment on the gateway's side: one private network per kernel.

The launcher (``sandbox_gateway.launchers.docker``) gives every kernel container a network of
its own and attaches the gateway to it.  This module is the gateway's half of that design:

* ``SandboxDockerProcessProxy`` (named by the kernelspecs) finds the kernel's address on its own
  network, removes that network when the kernel is terminated, and renames a container the warm
  pool hands to a user (``handed_over``);
* ``poll()``, which EG's restarter calls for every kernel every 3 s, answers from a watch of the
  engine's container events (``container_watch``) instead of two requests per kernel;
* ``apply()`` tells the launcher who the gateway is (its container id and the deployment label
  that scopes clean-up), then reconciles the kernel networks once at start-up and periodically:
  a network whose kernel is alive gets the gateway attached (a recreated gateway container
  re-adopts the kernels it persisted), and the egress container when egress is on (a recreated
  one is on no kernel network), a network whose kernel is gone is removed;
* at start-up, once persisted sessions are loaded, kernel containers that no kernel of the
  gateway owns (a crashed gateway's warm pool, a session that could not be re-adopted) are
  removed with their networks.

It is active when ``SANDBOX_KERNEL_SUBNETS`` is set (the gateway image sets it); the test gateway,
which runs local kernels, leaves it off.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import docker
from docker.errors import APIError, NotFound
from enterprise_gateway.services.processproxies.docker_swarm import DockerProcessProxy

from sandbox_gateway.egress.gateway import EgressSettings
from sandbox_gateway.launchers import rules
from sandbox_gateway.launchers.docker import egress_address
from sandbox_gateway.pool.manager import POOL_USER
from sandbox_gateway.proxies.container_watch import ContainerWatch, watched_poll

APP = "mini-jupyter-sandbox"
DEPLOYMENT_LABEL = f"{APP}.deployment"
# A network younger than this may belong to a launch still in progress (its container does not
# exist yet): the sweep leaves it alone.  Longer than any allowed launch timeout.
LAUNCH_GRACE_SECONDS = 600.0
ENDPOINT_WAIT_SECONDS = 15.0  # how long a removal waits for the kernel's container to go
# How long a relaunch waits for its kernel's previous network to be removed (it takes ~0.1 s).
REMOVAL_WAIT_SECONDS = 30.0

log = logging.getLogger("sandbox_docker")
RENAME_DELAY = 1.0
"""Seconds between a claim and the rename of its container: the Docker call contends with the
session's first requests (measured: +3.5 ms on a warm start → first result when run at once),
and the new owner's name can wait until the session is under way."""
_cleanup = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kernel-network-cleanup")
_watch: ContainerWatch | None = None
"""Every kernel container's state, from the engine's events (started by :func:`apply`)."""
# The latest removal queued per network name, awaited by a relaunch of that kernel.
_removals: dict[str, Future[None]] = {}
_client: docker.DockerClient | None = None


def _docker() -> docker.DockerClient:
    global _client
    if _client is None:
        _client = docker.DockerClient(
            base_url="unix://" + os.environ.get("SANDBOX_DOCKER_SOCKET", "/var/run/docker.sock")
        )
    return _client


def network_name(kernel_id: str) -> str:
    """The same name the launcher gives the kernel's network."""
    return f"{APP}-kernel-{kernel_id}"


class SandboxDockerProcessProxy(DockerProcessProxy):
    """EG's Docker process proxy for kernels that each live on a network of their own.

    A restart relaunches under the same kernel id, so the new container's network has the old
    one's name.  The launcher never reuses a network (a second start with someone's kernel id
    must not join that kernel's network), so the old network has to be gone first: the removal
    queued when the old container is terminated names the network by its Docker id (the removal
    of one container's network can never hit its successor's), and the relaunch waits for it.
    Removing synchronously instead would block the event loop; keeping the network across a
    restart would need the launcher to tell a restart from a hostile second start, which it
    cannot do from anything Docker shows while the old container is going.
    """

    kernel_network_id: str | None = None

    # EG annotates its DockerProcessProxy.launch_process as returning the proxy; it returns its
    # base's coroutine, as this one is.
    async def launch_process(  # type: ignore[override]
        self, kernel_cmd: str, **kwargs: Any
    ) -> SandboxDockerProcessProxy:
        pending = _removals.get(network_name(self.kernel_id))
        if pending is not None:
            try:
                # Shielded: a relaunch that gives up must not cancel the queued removal.
                removal = asyncio.shield(asyncio.wrap_future(pending))
                await asyncio.wait_for(removal, REMOVAL_WAIT_SECONDS)
            except Exception as exc:
                # The launcher then finds the name taken and refuses the start, saying why.
                self.log.warning(
                    f"the previous network of kernel {self.kernel_id} is not removed: {exc!r}"
                )
        await super().launch_process(kernel_cmd, **kwargs)  # type: ignore[misc]
        return self

    def poll(self) -> bool | None:
        # EG's restarter calls this every 3 s for every kernel, on the event loop: answered from
        # the container watch's memory, not with two requests to the engine each time.
        result: bool | None = watched_poll(
            _watch, self.kernel_id, self.get_initial_states(), super().poll
        )
        return result

    def get_container_status(self, iteration: int | None) -> str:
        # EG's version reads the address on one network named by EG_DOCKER_NETWORK; a kernel here
        # has exactly one network, named after it.  No address there means no connection: the
        # launch times out rather than falling back to another network.
        status = ""
        container = self._get_container()
        if container:
            # EG declares a str; docker's stubs say a name may be None (never a container's).
            self.container_name = container.name  # type: ignore[assignment]
            status = (container.status or "").lower()
            if status == "running" and not self.assigned_host:
                networks = container.attrs.get("NetworkSettings", {}).get("Networks") or {}
                endpoint = networks.get(network_name(self.kernel_id)) or {}
                self.kernel_network_id = endpoint.get("NetworkID") or self.kernel_network_id
                address = endpoint.get("IPAddress")
                if address:
                    self.assigned_ip = address
                    self.assigned_host = self.container_name
        if iteration:
            self.log.debug(
                f"{iteration}: waiting for kernel container {self.container_name!r}: "
                f"status {status!r}, address {self.assigned_ip!r}, kernel {self.kernel_id}"
            )
        return status

    def terminate_container_resources(self) -> bool | None:
        name = network_name(self.kernel_id)
        # Resolved now, while this container's network is the only one of that name; a kernel
        # that never reported (a failed launch) has no recorded id yet.
        network = self.kernel_network_id or _network_id(name)
        result = super().terminate_container_resources()
        if network:
            # Off the event loop: removing a network takes ~0.1 s of Docker's time.
            removal = _cleanup.submit(remove_network, network)
            _removals[name] = removal
            removal.add_done_callback(lambda done: _forget(name, done))
        return result

    def handed_over(self, user: str) -> None:
        """The warm pool gave this kernel to ``user``: rename its container to the name a cold
        start of that user's kernel would have had (``launchers.rules.container_name``), so that
        ``docker ps`` and audits show the owner.  Docker cannot change a label, so the
        ``kernel-username`` label keeps "sandbox-pool", the user it was launched for; the owner
        is in the name and in the gateway's records.

        The rename runs off the event loop, :data:`RENAME_DELAY` after the claim (the claim is
        the pool's fast path); the claim has happened by then, so a rename Docker refuses is
        logged, not raised.
        """
        kernel_id = self.kernel_manager.kernel_id or self.kernel_id
        new_name = rules.container_name(user, kernel_id)
        current = self.container_name or f"{POOL_USER}-{self.kernel_id}"
        self.container_name = self.assigned_host = new_name
        asyncio.get_running_loop().call_later(
            RENAME_DELAY, _cleanup.submit, rename_container, current, new_name
        )

    def get_process_info(self) -> dict[str, Any]:
        info: dict[str, Any] = super().get_process_info()
        info["sandbox_kernel_network_id"] = self.kernel_network_id
        return info

    def load_process_info(self, process_info: dict[str, Any]) -> None:
        super().load_process_info(process_info)
        self.kernel_network_id = process_info.get("sandbox_kernel_network_id")


def _forget(name: str, removal: Future[None]) -> None:
    # Only if no later removal of that name replaced it (dict operations are atomic).
    if _removals.get(name) is removal:
        _removals.pop(name, None)


def _network_id(name: str) -> str | None:
    try:
        return str(_docker().networks.get(name).id)
    except NotFound:
        return None
    except APIError as exc:
        log.warning("cannot look up kernel network %s (the sweep removes it): %s", name, exc)
        return None


def remove_network(name: str) -> None:
    """Detach the gateway and remove a kernel network (``name``: its name or, to be sure of the
    generation, its id); a missing network is fine."""
    client = _docker()
    members = [os.environ["SANDBOX_GATEWAY_CONTAINER"], os.environ.get("SANDBOX_EGRESS_CONTAINER")]
    for member in filter(None, members):
        try:
            client.api.disconnect_container_from_network(member, name, force=True)
        except NotFound:
            pass
        except APIError as exc:
            log.debug("detaching %s from %s: %s", member, name, exc)
    deadline = time.monotonic() + ENDPOINT_WAIT_SECONDS
    while True:
        try:
            client.api.remove_network(name)
            return
        except NotFound:
            return
        except APIError as exc:
            # The kernel's container is still being removed (AutoRemove runs after it exits):
            # wait for it rather than leave the network to the sweep, which waits a launch's
            # whole grace before it takes a network.
            if "active endpoints" in str(exc) and time.monotonic() < deadline:
                time.sleep(0.25)
                continue
            log.warning("kernel network %s not removed yet (the sweep retries): %s", name, exc)
            return


def rename_container(current: str, new_name: str) -> None:
    try:
        _docker().api.rename(current, new_name)
    except NotFound:
        # Renames run behind the claims: a short session may have ended before its turn.
        log.debug("kernel container %s gone before its rename to %s", current, new_name)
    except APIError as exc:
        log.warning("kernel container %s not renamed to %s: %s", current, new_name, exc)


def own_container_id() -> str:
    """This container's id, from the mount Docker makes for /etc/hostname; else the hostname."""
    pattern = re.compile(r"/containers/([0-9a-f]{64})/")
    try:
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            match = pattern.search(line)
            if match:
                return match.group(1)
    except OSError:
        pass
    return socket.gethostname()


def _attach_egress(network: Any, egress: str) -> None:
    try:
        subnet = ipaddress.IPv4Network(network.attrs["IPAM"]["Config"][0]["Subnet"])
        network.connect(egress, ipv4_address=egress_address(subnet))
        log.info("attached the egress container to kernel network %s", network.name)
    except (APIError, KeyError, IndexError, ValueError) as exc:
        log.warning("cannot attach the egress container to %s: %s", network.name, exc)


def sweep(deployment: str, gateway: str, alias: str) -> None:
    """Attach the gateway (and the egress container) to every live kernel's network; remove
    networks whose kernel is gone."""
    egress = os.environ.get("SANDBOX_EGRESS_CONTAINER", "")
    client = _docker()
    labels = [f"{DEPLOYMENT_LABEL}={deployment}"]
    # One listing, no inspect per container: a kernel removed between the two made the whole
    # sweep fail (404), and with hundreds of kernels each inspect is a request to the engine.
    alive = {
        (container.get("Labels") or {}).get("kernel_id")
        for container in client.api.containers(
            all=True, filters={"label": [*labels, "component=kernel"]}
        )
        if container.get("State") in ("created", "running", "restarting")
    }
    networks = client.networks.list(filters={"label": [*labels, "component=kernel-network"]})
    for network in networks:
        kernel_id = network.attrs.get("Labels", {}).get("kernel_id")
        if kernel_id in alive:
            network.reload()
            members = network.attrs.get("Containers") or {}
            if gateway not in members:
                try:
                    network.connect(gateway, aliases=[alias])
                    log.info("re-attached the gateway to kernel network %s", network.name)
                except APIError as exc:
                    log.warning("cannot re-attach the gateway to %s: %s", network.name, exc)
            if egress and egress not in {member.get("Name") for member in members.values()}:
                _attach_egress(network, egress)
        elif _age_seconds(network.attrs.get("Created", "")) > LAUNCH_GRACE_SECONDS:
            remove_network(cast(str, network.id))  # a network the engine listed has an id


def remove_orphans(deployment: str, known: set[str]) -> int:
    """Remove this deployment's kernel containers (and networks) that no kernel of the gateway
    owns: kernels a crashed gateway had not handed out (its warm pool) or could not re-adopt.
    Called once at start-up, before the gateway launches anything; returns how many."""
    client = _docker()
    labels = [f"{DEPLOYMENT_LABEL}={deployment}", "component=kernel"]
    removed = 0
    for container in client.containers.list(all=True, filters={"label": labels}):
        key = container.labels.get("kernel_id")
        if key in known:
            continue
        try:
            container.remove(force=True)
        except NotFound:
            pass
        except APIError as exc:
            log.warning("cannot remove orphaned kernel container %s: %s", container.name, exc)
            continue
        removed += 1
        if key:
            remove_network(network_name(key))
    if removed:
        log.info("removed %d kernel container(s) that no kernel of this gateway owns", removed)
    return removed


def _remove_orphans_at_start(deployment: str) -> None:
    from enterprise_gateway.enterprisegatewayapp import EnterpriseGatewayApp

    original_start = EnterpriseGatewayApp.start

    def start(self: Any) -> None:
        # Persisted sessions are loaded by now (init_configurables); nothing is launching yet.
        known = {
            str(getattr(manager.process_proxy, "kernel_id", ""))
            for manager in self.kernel_manager._kernels.values()
            if getattr(manager, "process_proxy", None) is not None
        }
        try:
            remove_orphans(deployment, known)
        except Exception as exc:  # the engine may be restarting: the gateway still starts
            log.warning("orphaned kernel containers not checked: %s", exc)
        original_start(self)

    EnterpriseGatewayApp.start = start  # type: ignore[method-assign]


def _age_seconds(created: str) -> float:
    # Docker writes nanoseconds ("2026-11-30T09:00:00.123456789Z"); datetime takes microseconds.
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?", created)
    if not match:
        return 0.0
    then = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - then).total_seconds()


def _sweep_forever(deployment: str, gateway: str, alias: str, interval: float) -> None:
    while True:
        time.sleep(interval)
        try:
            sweep(deployment, gateway, alias)
        except Exception as exc:  # the Docker engine may be restarting; try again next time
            log.warning("kernel network sweep failed: %s", exc)


def _find_egress(deployment: str) -> None:
    """Name the egress container to the launcher (``SANDBOX_EGRESS_CONTAINER``) when egress is
    on: the one given, else this deployment's compose service ``egress``.  Off, none is named,
    so kernel networks stay the kernel's and the gateway's alone."""
    if not EgressSettings.from_env(os.environ).enabled:
        os.environ.pop("SANDBOX_EGRESS_CONTAINER", None)
        return
    if os.environ.get("SANDBOX_EGRESS_CONTAINER"):
        return
    labels = [f"com.docker.compose.project={deployment}", "com.docker.compose.service=egress"]
    found = _docker().containers.list(filters={"label": labels})
    if not found:
        raise SystemExit(
            "sandbox gateway: egress is on (SANDBOX_EGRESS_URL and SANDBOX_EGRESS_ALLOW), but "
            f"this deployment ({deployment}) has no running egress container; start it, or "
            "name it in SANDBOX_EGRESS_CONTAINER"
        )
    os.environ["SANDBOX_EGRESS_CONTAINER"] = str(found[0].name)


def apply() -> None:
    """Publish the gateway's identity to the launcher, reconcile networks, start the sweeper."""
    gateway = os.environ.setdefault("SANDBOX_GATEWAY_CONTAINER", own_container_id())
    if "SANDBOX_DEPLOYMENT" not in os.environ:
        attrs: dict[str, Any] = _docker().api.inspect_container(gateway)
        labels = attrs.get("Config", {}).get("Labels") or {}
        os.environ["SANDBOX_DEPLOYMENT"] = labels.get("com.docker.compose.project") or gateway[:12]
    deployment = os.environ["SANDBOX_DEPLOYMENT"]
    _find_egress(deployment)
    alias = os.environ.get("EG_RESPONSE_IP", "sandbox-gateway")
    global _watch
    _watch = ContainerWatch(
        _docker().api, [f"{DEPLOYMENT_LABEL}={deployment}", "component=kernel"]
    ).start()
    sweep(deployment, gateway, alias)
    _remove_orphans_at_start(deployment)
    interval = float(os.environ.get("SANDBOX_NETWORK_SWEEP_INTERVAL", "60"))
    threading.Thread(
        target=_sweep_forever,
        args=(deployment, gateway, alias, interval),
        name="kernel-network-sweep",
        daemon=True,
    ).start()
