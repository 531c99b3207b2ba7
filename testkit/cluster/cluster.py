"""A single-node Kubernetes cluster on this machine, with the chart installed by helm.

``up`` builds what is missing (cached by version, see ``build``), then starts etcd, the API
server, the controller-manager, the scheduler, containerd, the kubelet, kube-proxy and the
NetworkPolicy enforcer as processes, and cluster DNS and the ingress controller as pods; it
starts the egress tests' own test hosts (``testkit.egress``) on the node's address, outside every
pod; it imports the project's images and ``helm install``s the chart with
``charts/mini-jupyter-sandbox/ci/local-cluster-values.yaml`` and the egress values that name the
test hosts.  ``down`` stops all of it and removes
what it left on the machine.  The state lives in ``SANDBOX_K8S_STATE`` (default
``/var/lib/mini-jupyter-sandbox/cluster``); ``<state>/env`` holds the shell exports ``up`` prints.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from testkit.cluster import addons, build, enforcer, node
from testkit.cluster.control_plane import API_SERVICE_IP, ControlPlane, node_address
from testkit.cluster.processes import Processes
from testkit.gateway import free_port
from testkit.languages import LANGUAGES

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "mini-jupyter-sandbox"
VALUES = CHART / "ci" / "local-cluster-values.yaml"
RELEASE = "sandbox"
RELEASE_NAMESPACE = "sandbox"
VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
IMAGES = [
    f"mini-jupyter-sandbox/{name}:{VERSION}"
    for name in ("gateway", "kernel-python", "notebook", "fileserver", "controller")
] + [f"mini-jupyter-sandbox/kernel-{name}:{VERSION}" for name in LANGUAGES]
TENANT = "e2e"  # the tenant of SandboxSessions in namespace "e2e" (local-cluster-values.yaml)
# What the egress test hosts' logging resolver answers beyond testkit.egress's own private and
# link-local names: the platform's own addresses, which the egress process must never dial.
PLATFORM_ANSWERS = {"kernelnet.test": node.POD_CIDR.split("/")[0], "apiserver.test": API_SERVICE_IP}
# The test hosts' origin names, which the operator's SANDBOX_EGRESS_RESOLVE maps to them.
ORIGIN_NAMES = ("allowed.test", "other.test", "also.test")
ORIGIN_PORTS = (443, 8443, 9443, 80)


def state_dir() -> Path:
    return Path(os.environ.get("SANDBOX_K8S_STATE", "/var/lib/mini-jupyter-sandbox/cluster"))


def run_dir() -> Path:
    return Path(os.environ.get("SANDBOX_K8S_RUN", "/run/mini-jupyter-sandbox"))


def log(message: str) -> None:
    print(f"[cluster {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Timer:
    """Seconds per step, for the summary ``up`` prints (build, cluster, images, chart)."""

    def __init__(self) -> None:
        self.steps: dict[str, float] = {}
        self._last = time.monotonic()

    def lap(self, step: str) -> None:
        now = time.monotonic()
        self.steps[step] = self.steps.get(step, 0.0) + now - self._last
        self._last = now
        log(f"{step}: {self.steps[step]:.1f}s")


def build_all() -> dict[str, Path]:
    """Every binary the cluster runs (the slow part of a first ``up``)."""
    binaries = {name: build.kubernetes_binary(name) for name in build.KUBERNETES_COMMANDS}
    binaries["etcd"] = build.etcd_binary()
    binaries["containerd"] = build.containerd_binaries()
    binaries["runc"] = build.runc_binary()
    binaries["pause"] = build.pause_binary()
    binaries["coredns"] = build.coredns_binary()
    binaries["helm"] = build.helm_binary()
    binaries["traefik"] = build.traefik_binary()
    binaries["enforcer"] = enforcer.binary()
    return binaries


class Cluster:
    def __init__(self, state: Path | None = None, run: Path | None = None) -> None:
        self.state = state or state_dir()
        self.paths = node.Paths(self.state, run or run_dir())
        self.processes = Processes(self.state)
        self.kubeconfig = self.state / "admin.kubeconfig"

    # --- kubectl and helm ---------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            [str(build.kubernetes_binary("kubectl")), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def apply(self, manifests: list[dict[str, Any]]) -> None:
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(manifests))

    def helm(self, *args: str) -> str:
        result = subprocess.run(
            [str(build.helm_binary()), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    # --- up -----------------------------------------------------------------------------------

    def is_up(self) -> bool:
        if not self.processes.running():
            return False
        try:
            self.processes.check()
            self.kubectl("get", "--raw", "/readyz")
            return True
        except (RuntimeError, OSError):
            return False

    def up(self) -> dict[str, str]:
        if self.is_up() and (self.state / "env").exists():
            log(f"already up (state in {self.state}); `down` first to start afresh")
            return self.exports()
        if self.processes.running() or self.state.exists():
            log("removing what a previous cluster left behind")
            self.down()
        timer = Timer()
        build_all()
        timer.lap("build")
        try:
            self._start(timer)
        except BaseException:
            log(f"start failed: logs in {self.state}; stopping what was started")
            raise
        exports = self._exports()
        (self.state / "env").write_text(
            "".join(f"export {k}={shlex.quote(v)}\n" for k, v in exports.items())
        )
        log("times: " + ", ".join(f"{k} {v:.0f}s" for k, v in timer.steps.items()))
        return exports

    def _start(self, timer: Timer) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        self.state.chmod(0o700)
        plane = ControlPlane(self.state)
        plane.start()
        authority = plane.authority
        components = {
            "controller-manager": ("system:kube-controller-manager", ()),
            "scheduler": ("system:kube-scheduler", ()),
            "kubelet": (f"system:node:{node.NODE_NAME}", ("system:nodes",)),
            "kube-proxy": ("system:kube-proxy", ()),
            "enforcer": ("system:sandbox-network-policy", ()),
        }
        kubeconfigs = {
            name: plane.write_kubeconfig(
                self.state / f"{name}.kubeconfig", authority.issue(name, user, groups)
            )
            for name, (user, groups) in components.items()
        }
        self.processes.spawn(
            "kube-controller-manager",
            [
                str(build.kubernetes_binary("kube-controller-manager")),
                f"--kubeconfig={kubeconfigs['controller-manager']}",
                f"--authentication-kubeconfig={kubeconfigs['controller-manager']}",
                f"--authorization-kubeconfig={kubeconfigs['controller-manager']}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--root-ca-file={plane.ca}",
                f"--service-account-private-key-file={plane.accounts.key}",
                "--use-service-account-credentials=true",
                "--controllers=*,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller",
                "--leader-elect=false",
                "--profiling=false",
            ],
        )
        scheduler_config = self.state / "scheduler.yaml"
        scheduler_config.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kubescheduler.config.k8s.io/v1",
                    "kind": "KubeSchedulerConfiguration",
                    "clientConnection": {"kubeconfig": str(kubeconfigs["scheduler"])},
                    "leaderElection": {"leaderElect": False},
                }
            )
        )
        self.processes.spawn(
            "kube-scheduler",
            [
                str(build.kubernetes_binary("kube-scheduler")),
                f"--config={scheduler_config}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--profiling=false",
            ],
        )
        node.create_cgroup_root()
        node.start_containerd(self.paths, self.processes)
        self._start_test_hosts(plane.address)
        timer.lap("control plane and containerd")

        addons.scratch_image(node.PAUSE_IMAGE, build.pause_binary(), "65535:65535")
        addons.scratch_image(addons.DNS_IMAGE, build.coredns_binary(), "65532:65532")
        addons.scratch_image(addons.INGRESS_IMAGE, build.traefik_binary(), "65532:65532")
        node.import_images(
            self.paths, [node.PAUSE_IMAGE, addons.DNS_IMAGE, addons.INGRESS_IMAGE, *IMAGES]
        )
        timer.lap("images")

        serving = authority.issue(
            "kubelet-serving", node.NODE_NAME, hosts=(node.NODE_NAME, plane.address, "127.0.0.1")
        )
        kubelet_config = self.state / "kubelet.yaml"
        kubelet_config.write_text(
            yaml.safe_dump(
                node.kubelet_config(
                    self.paths, plane.address, plane.ca, (serving.cert, serving.key)
                )
            )
        )
        self.processes.spawn(
            "kubelet",
            [
                str(build.kubernetes_binary("kubelet")),
                f"--config={kubelet_config}",
                f"--kubeconfig={kubeconfigs['kubelet']}",
                f"--root-dir={self.paths.kubelet_root}",
                f"--hostname-override={node.NODE_NAME}",
                f"--node-ip={plane.address}",
                "--v=1",
            ],
        )
        proxy_config = self.state / "kube-proxy.yaml"
        proxy_config.write_text(
            yaml.safe_dump(
                node.kube_proxy_config(kubeconfigs["kube-proxy"], free_port(), free_port())
            )
        )
        self.processes.spawn(
            "kube-proxy",
            [str(build.kubernetes_binary("kube-proxy")), f"--config={proxy_config}"],
        )
        self._wait("the node to be Ready", self._node_ready, 120)
        enforcer.start(self, kubeconfigs["enforcer"])
        timer.lap("node")

        self.apply(addons.dns())
        self.apply(addons.ingress())
        for deployment, namespace in (("coredns", "kube-system"), ("traefik", "ingress")):
            self.kubectl(
                "rollout", "status", f"deployment/{deployment}", "-n", namespace, "--timeout=180s"
            )
        timer.lap("dns and ingress")

        self.install_chart()
        timer.lap("chart")

    def _node_ready(self) -> bool:
        conditions = self.kubectl(
            "get",
            "node",
            node.NODE_NAME,
            "-o",
            'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
            check=False,
        )
        return conditions.strip() == "True"

    def _wait(self, what: str, done: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            self.processes.check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.2)

    @property
    def test_hosts(self) -> Path:
        """The egress test hosts' directory: their origin CA, and what reached them."""
        return self.state / "egress-test-hosts"

    def _start_test_hosts(self, address: str) -> None:
        self.test_hosts.mkdir()
        argv = [sys.executable, "-m", "testkit.egress", str(self.test_hosts), f"--host={address}"]
        self.processes.spawn(
            "egress-test-hosts",
            [*argv, *(f"--answer={name}={ip}" for name, ip in PLATFORM_ANSWERS.items())],
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        self._wait("the egress test hosts", (self.test_hosts / "ready").exists, 60)

    def egress_values(self) -> Path:
        """The chart's egress values that point the egress process at the test hosts: its
        upstream resolver, the origin names mapped to them, their CA, and the NetworkPolicy rule
        letting the egress pod reach them (the ceiling is in local-cluster-values.yaml)."""
        address = node_address()  # where _start_test_hosts serves them
        ports = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
        ports += [{"port": port, "protocol": "TCP"} for port in ORIGIN_PORTS]
        values = {
            "kernels": {
                "egress": {
                    "dns": f"{address}:53",
                    "resolve": [f"{name}={address}" for name in ORIGIN_NAMES],
                    "originCA": (self.test_hosts / "origin-ca.pem").read_text(),
                    "extraEgress": [
                        {"to": [{"ipBlock": {"cidr": f"{address}/32"}}], "ports": ports}
                    ],
                }
            }
        }
        path = self.state / "egress-values.yaml"
        path.write_text(yaml.safe_dump(values))
        return path

    def install_chart(self) -> None:
        # Host directories owned by the pods' user (uid 1000, gid 100): the shared volume, and
        # the claim the gateway keeps its kernel sessions on (gateway.sessionClaim).
        shared, sessions = self.state / "shared", self.state / "gateway-sessions"
        for directory in (shared, sessions):
            directory.mkdir(exist_ok=True)
            os.chown(directory, 1000, 100)
        sessions.chmod(0o700)
        self.apply(session_claim(sessions))
        self.helm(
            "upgrade",
            "--install",
            RELEASE,
            str(CHART),
            "--namespace",
            RELEASE_NAMESPACE,
            "--create-namespace",
            "-f",
            str(VALUES),
            "-f",
            str(self.egress_values()),
            "--set",
            f"sharedVolume.hostPath.path={shared}",
            "--wait",
            "--timeout=10m",
        )

    # --- what a user and the tests need -------------------------------------------------------

    def secret(self, name: str, key: str, namespace: str = RELEASE_NAMESPACE) -> str:
        data = json.loads(self.kubectl("get", "secret", name, "-n", namespace, "-o", "json"))
        return base64.b64decode(data["data"][key]).decode()

    def _exports(self) -> dict[str, str]:
        ports = addons.ENTRY_POINTS
        prefix = f"{RELEASE}-mini-jupyter-sandbox"
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "SANDBOX_K8S_STATE": str(self.state),
            "GATEWAY_HTTP": f"http://127.0.0.1:{ports['gateway']}",
            "GATEWAY_WS": f"ws://127.0.0.1:{ports['gateway']}",
            "NOTEBOOK_URL": f"http://127.0.0.1:{ports['notebook']}",
            "FILE_SERVER_URL": f"http://127.0.0.1:{ports['fileserver']}",
            "FILE_SERVER_TOKEN": self.secret(f"{prefix}-fileserver-token", "token"),
            "NOTEBOOK_TOKEN": self.secret(f"{prefix}-notebook-token", "token"),
            # The client's default variable: the tenant owning the e2e namespace's sessions.
            "JUPYTER_GATEWAY_AUTH_TOKEN": self.secret(f"{prefix}-gateway-token", TENANT),
        }

    def exports(self) -> dict[str, str]:
        text = (self.state / "env").read_text()
        pairs = (shlex.split(line.removeprefix("export "))[0] for line in text.splitlines())
        return dict(pair.split("=", 1) for pair in pairs)

    # --- down ---------------------------------------------------------------------------------

    def down(self) -> None:
        """Stop every process, kill every pod, and remove what the cluster made on the machine."""
        self.processes.stop()
        node.kill_pods()
        node.kill_shims(self.paths)
        node.unmount_all(self.state, self.paths.run)
        node.remove_network()
        enforcer.remove()
        node.remove_cgroup_root()
        shutil.rmtree(self.paths.run, ignore_errors=True)
        shutil.rmtree(self.state, ignore_errors=True)


def session_claim(directory: Path) -> list[dict[str, Any]]:
    """The release namespace and a claim pre-bound to a host directory: what an operator
    provisions for gateway.sessionClaim on a cluster without a StorageClass."""
    name = "gateway-sessions"
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": RELEASE_NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"{RELEASE_NAMESPACE}-{name}"},
            "spec": {
                "capacity": {"storage": "64Mi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": str(directory), "type": "Directory"},
                "claimRef": {"namespace": RELEASE_NAMESPACE, "name": name},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": RELEASE_NAMESPACE},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "volumeName": f"{RELEASE_NAMESPACE}-{name}",
                "resources": {"requests": {"storage": "64Mi"}},
            },
        },
    ]
