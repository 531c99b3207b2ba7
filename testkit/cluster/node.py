"""The cluster's one node: containerd with runc, the CNI bridge, the kubelet and kube-proxy.

Everything this node creates on the machine carries the project's name and is removed by
:func:`remove`: the cgroup root ``/mini-jupyter-sandbox`` in every hierarchy, the bridge
``sandbox-cni0``, containerd's root and state, the kubelet's root, kube-proxy's nftables tables,
and the iptables chains the kubelet and the CNI plugins add.  Docker keeps running beside it; its
containerd, sockets (``/run/containerd``), netns directory and chains are never touched.

What this machine needs, and why:
- cgroup v1 is still in use here: the kubelet is told ``failCgroupV1: false``, and its
  ``cgroupRoot`` is created beforehand in every hierarchy (a new v1 cpuset is empty: its cpus
  and mems are copied from the parent, or no task could join it).
- root here lacks CAP_SYS_RESOURCE, so nothing may lower ``oom_score_adj``: containerd clamps
  the kubelet's requests (``restrict_oom_score_adj``).
- Docker's FORWARD policy is DROP and bridged traffic passes through it: the CNI ``firewall``
  plugin accepts each pod's traffic in its own chain.
- There is no registry: images are imported from Docker's store, pods never pull, and the pod
  sandbox image is this project's own ``pause``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

from testkit.cluster import build
from testkit.cluster.processes import Processes

NODE_NAME = "sandbox-node"
CGROUP_ROOT = "mini-jupyter-sandbox"
BRIDGE = "sandbox-cni0"
POD_CIDR = "10.244.0.0/24"
CLUSTER_CIDR = "10.244.0.0/16"
DNS_SERVICE_IP = "10.96.0.10"
PAUSE_IMAGE = "mini-jupyter-sandbox/pause:local"
CNI_PLUGINS = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
CGROUP_V1 = ("systemd", "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids")


class Paths:
    """Where the node keeps its state (``state``) and its sockets (``run``)."""

    def __init__(self, state: Path, run: Path) -> None:
        self.state = state
        self.run = run
        self.containerd_socket = run / "containerd.sock"
        # containerd's shim sockets: at most 42 characters, and never Docker's /run/containerd/s.
        self.shim_sockets = run / "s"
        if len(str(self.shim_sockets)) > 42:
            raise ValueError(f"run directory too long for shim sockets: {run}")
        self.cni_conf = state / "cni" / "net.d"
        self.kubelet_root = state / "kubelet"


def ctr(paths: Paths, *args: str, input: bytes | None = None) -> bytes:
    tool = build.containerd_binaries() / "ctr"
    result = subprocess.run(
        [str(tool), "--address", str(paths.containerd_socket), "-n", "k8s.io", *args],
        input=input,
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"ctr {' '.join(args)}: {result.stderr.decode(errors='replace')}")
    return result.stdout


# --- containerd -----------------------------------------------------------------------------


def containerd_config(paths: Paths) -> str:
    runc = build.runc_binary()
    return f"""\
version = 3
root = '{paths.state / "containerd"}'
state = '{paths.run / "containerd"}'

[grpc]
  address = '{paths.containerd_socket}'
[ttrpc]
  address = '{paths.containerd_socket}.ttrpc'
[debug]
  address = ''
[metrics]
  address = ''

[plugins.'io.containerd.internal.v1.opt']
  path = '{paths.state / "opt"}'
[plugins.'io.containerd.shim.v1.manager']
  socket_dir = '{paths.shim_sockets}'
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = 'docker.io/{PAUSE_IMAGE}'
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  enable_unprivileged_ports = true
  enable_unprivileged_icmp = true
  netns_mounts_under_state_dir = true
  cdi_spec_dirs = []
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '{runc}'
        Root = '{paths.run / "runc"}'
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['{CNI_PLUGINS}']
    conf_dir = '{paths.cni_conf}'
    max_conf_num = 1
[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
  stream_server_address = '127.0.0.1'
  stream_server_port = '0'
"""


def cni_config(paths: Paths) -> dict[str, object]:
    return {
        "cniVersion": "1.0.0",
        "name": "sandbox-pods",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(paths.state / "cni" / "ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "firewall", "backend": "iptables"},
        ],
    }


def start_containerd(paths: Paths, processes: Processes, timeout: float = 60) -> None:
    for directory in (paths.state / "containerd", paths.state / "opt", paths.cni_conf):
        directory.mkdir(parents=True, exist_ok=True)
    paths.run.mkdir(parents=True, exist_ok=True)
    config = paths.state / "containerd.toml"
    config.write_text(containerd_config(paths))
    (paths.cni_conf / "10-sandbox.conflist").write_text(json.dumps(cni_config(paths), indent=2))
    binaries = build.containerd_binaries()
    # containerd finds its shim on PATH: ours first, not Debian's older one in /usr/bin.
    env = {**os.environ, "PATH": f"{binaries}:{os.environ.get('PATH', '')}"}
    processes.spawn("containerd", [str(binaries / "containerd"), "--config", str(config)], env)
    deadline = time.monotonic() + timeout
    while True:
        processes.check()
        try:
            ctr(paths, "version")
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def import_images(paths: Paths, images: list[str]) -> None:
    """Copy ``images`` from Docker's store into containerd's (one stream: shared layers once)."""
    save = subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE)
    assert save.stdout is not None
    tool = build.containerd_binaries() / "ctr"
    imported = subprocess.run(
        [
            str(tool),
            "--address",
            str(paths.containerd_socket),
            "-n",
            "k8s.io",
            "images",
            "import",
            "-",
        ],
        stdin=save.stdout,
        capture_output=True,
        check=False,
    )
    save.stdout.close()
    if save.wait() != 0 or imported.returncode != 0:
        raise RuntimeError(f"importing {images}: {imported.stderr.decode(errors='replace')}")


# --- cgroups --------------------------------------------------------------------------------


def cgroup_v1() -> bool:
    return not Path("/sys/fs/cgroup/cgroup.controllers").exists()


def create_cgroup_root() -> None:
    if not cgroup_v1():
        root = Path("/sys/fs/cgroup") / CGROUP_ROOT
        root.mkdir(exist_ok=True)
        return
    for hierarchy in CGROUP_V1:
        base = Path("/sys/fs/cgroup") / hierarchy
        if base.is_dir():
            (base / CGROUP_ROOT).mkdir(exist_ok=True)
    cpuset = Path("/sys/fs/cgroup/cpuset")
    for name in ("cpuset.cpus", "cpuset.mems"):
        (cpuset / CGROUP_ROOT / name).write_text((cpuset / name).read_text())


def _cgroup_dirs() -> list[Path]:
    bases = [Path("/sys/fs/cgroup")] + [Path("/sys/fs/cgroup") / h for h in (*CGROUP_V1, "unified")]
    return [base / CGROUP_ROOT for base in bases if (base / CGROUP_ROOT).is_dir()]


def kill_pods() -> None:
    """SIGKILL every process in the node's cgroup root: all containers of all pods."""
    for _ in range(50):
        pids = {
            int(pid)
            for root in _cgroup_dirs()
            for procs in root.rglob("cgroup.procs")
            for pid in procs.read_text().split()
        }
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        time.sleep(0.1)


def remove_cgroup_root() -> None:
    for root in _cgroup_dirs():
        for directory in sorted(
            (d for d in root.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)
        ):
            directory.rmdir()
        root.rmdir()


# --- kubelet and kube-proxy -----------------------------------------------------------------


def kubelet_config(
    paths: Paths, address: str, ca: Path, serving: tuple[Path, Path]
) -> dict[str, Any]:
    from testkit.gateway import free_port

    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "imageServiceEndpoint": f"unix://{paths.containerd_socket}",
        "address": address,
        "port": free_port(),
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": free_port(),
        "clusterDNS": [DNS_SERVICE_IP],
        "clusterDomain": "cluster.local",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(serving[0]),
        "tlsPrivateKeyFile": str(serving[1]),
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "podCIDR": POD_CIDR,
        "maxPods": 110,
        # Imported images cannot be pulled again: never evict or collect them for disk space.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "resolvConf": "/etc/resolv.conf",
        "cgroupsPerQOS": True,
        "cgroupRoot": f"/{CGROUP_ROOT}",
        "enforceNodeAllocatable": ["pods"],
        "serializeImagePulls": False,
        "containerLogMaxSize": "10Mi",
        "containerLogMaxFiles": 2,
    }


def kube_proxy_config(kubeconfig: Path, healthz: int, metrics: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "nftables",
        "clusterCIDR": CLUSTER_CIDR,
        "hostnameOverride": NODE_NAME,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": f"127.0.0.1:{healthz}",
        "metricsBindAddress": f"127.0.0.1:{metrics}",
        "conntrack": {"maxPerCore": 0},
        "nodePortAddresses": ["primary"],
    }


# --- removal --------------------------------------------------------------------------------


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


# The chains the kubelet (iptables-nft) and the CNI plugins (bridge masquerade, portmap's host
# ports, the firewall plugin) create: CNI-* in any table, and the kubelet's own three.
NODE_CHAINS = re.compile(r"CNI-[A-Za-z0-9-]+|KUBE-(FIREWALL|KUBELET-CANARY|IPTABLES-HINT)")


def remove_network() -> None:
    """The node's bridge, kube-proxy's tables and every chain the kubelet and CNI added."""
    _run("ip", "link", "del", BRIDGE)
    for family in ("ip", "ip6"):
        _run("nft", "delete", "table", family, "kube-proxy")
    remove_chains(NODE_CHAINS)


def remove_chains(own: re.Pattern[str]) -> None:
    """Every iptables/ip6tables chain whose name matches ``own``, and every jump into one."""
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            rules = _run(tool, "-t", table, "-S").stdout.splitlines()
            chains = [
                r.split()[1] for r in rules if r.startswith("-N ") and own.fullmatch(r.split()[1])
            ]
            for rule in rules:
                parts = shlex.split(rule)
                if parts[0] != "-A" or own.fullmatch(parts[1]):
                    continue  # a rule inside one of ours goes with its chain
                if "-j" in parts and own.fullmatch(parts[parts.index("-j") + 1]):
                    _run(tool, "-t", table, "-D", *parts[1:])
            for chain in chains:
                _run(tool, "-t", table, "-F", chain)
            for chain in chains:
                _run(tool, "-t", table, "-X", chain)


def kill_shims(paths: Paths) -> None:
    """containerd's shims outlive it by design; ours name our socket on their command line."""
    marker = str(paths.containerd_socket).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), 9)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass


def mounts_under(*roots: Path) -> list[str]:
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if any(target == str(r) or target.startswith(f"{r}/") for r in roots):
            found.append(target)
    return sorted(set(found), key=len, reverse=True)


def unmount_all(*roots: Path) -> None:
    """Unmount what containerd and the kubelet mounted under ``roots`` (deepest first).  Raises
    if one stays: removing the directories then could reach through a bind mount."""
    for target in mounts_under(*roots):
        _run("umount", "-l", target)
    left = mounts_under(*roots)
    if left:
        raise RuntimeError(f"still mounted, not removing {roots}: {left}")
