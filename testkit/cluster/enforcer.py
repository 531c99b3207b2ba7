"""The cluster's NetworkPolicy enforcer: kube-router's network policy controller alone (no
routing, no service proxy), run on the node as a process with a kubeconfig of its own.

It translates every NetworkPolicy into iptables chains (``KUBE-ROUTER-*``, ``KUBE-NWPLCY-*``,
``KUBE-POD-FW-*``) and ipsets (``KUBE-SRC-*``, ``KUBE-DST-*``), jumped to from the top of INPUT,
FORWARD and OUTPUT (it moves its jumps back to the top on every sync), so it decides before
Docker's chains and the CNI firewall plugin's accept rules.  A denied connection is rejected, not
dropped.  Traffic from the node itself to pods is always let through (kubelet probes).

On exit it leaves its rules in place (they keep enforcing), and v2.1.0's ``--cleanup-config``
removes none of them: :func:`remove` does.  :func:`stop` turns enforcement off; the tests use it
to show that a probe gets through without it.  Its health port would also serve pprof to every
pod, so it is off; it is ready once its first full sync is done.

Only kube-router v2.1.0 is published as a Go module here.  kind's enforcer, kube-network-policies,
needs nftables' ``queue`` statement, which this machine's kernel lacks.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testkit.cluster import build
from testkit.cluster.control_plane import SERVICE_CIDR
from testkit.cluster.node import NODE_NAME, remove_chains

if TYPE_CHECKING:
    from testkit.cluster.cluster import Cluster

MODULE, VERSION = "github.com/cloudnativelabs/kube-router/v2", "v2.1.0"
USER = "system:sandbox-network-policy"
NAME = "network-policy"


def binary() -> Path:
    flags = f"-s -w -X {MODULE}/pkg/version.Version={VERSION}"
    return (
        build.go_install("kube-router", VERSION, [f"{MODULE}/cmd/kube-router"], flags)
        / "kube-router"
    )


def rbac() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": USER},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["namespaces", "pods", "nodes", "services", "endpoints"],
                    "verbs": ["get", "list", "watch"],
                },
                {
                    "apiGroups": ["networking.k8s.io"],
                    "resources": ["networkpolicies"],
                    "verbs": ["get", "list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["get", "list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": USER},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": USER,
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}],
        },
    ]


def start(cluster: Cluster, kubeconfig: Path) -> None:
    cluster.apply(rbac())
    log = cluster.state / f"{NAME}.log"
    start_at = log.stat().st_size if log.exists() else 0
    cluster.processes.spawn(
        NAME,
        [
            str(binary()),
            f"--kubeconfig={kubeconfig}",
            f"--hostname-override={NODE_NAME}",
            "--run-firewall=true",
            "--run-router=false",
            "--run-service-proxy=false",
            "--run-loadbalancer=false",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--health-port=0",
            "--metrics-port=0",
            "--iptables-sync-period=1m",
            "-v=1",
        ],
    )
    deadline = time.monotonic() + 60

    def synced() -> bool:
        # Its jumps come first, its pods' chains with the first full sync: wait for both.
        with open(log, "rb") as lines:
            lines.seek(start_at)
            return b"sync iptables took" in lines.read() and enforcing()

    while not synced():
        cluster.processes.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{NAME} never synced:\n{cluster.processes.log(NAME)[-3000:]}")
        time.sleep(0.2)


def enforcing() -> bool:
    """Whether the enforcer's jump in FORWARD comes before the CNI firewall plugin's, the one
    that accepts pod traffic.  (Docker may put its own jumps above both when it creates a
    network; those match only Docker's bridges.  The enforcer moves back to the top on its
    next sync.)"""
    rules = _iptables("iptables", "-t", "filter", "-S", "FORWARD").splitlines()
    jumps = [rule.rsplit("-j ", 1)[-1] for rule in rules if rule.startswith("-A FORWARD")]
    if "KUBE-ROUTER-FORWARD" not in jumps:
        return False
    accepts = jumps.index("CNI-FORWARD") if "CNI-FORWARD" in jumps else len(jumps)
    return jumps.index("KUBE-ROUTER-FORWARD") < accepts


def fences(pod_ip: str) -> bool:
    """Whether the enforcer has the firewall chain of the pod at ``pod_ip`` yet, both ways.

    It applies policy to a new pod on its watch of pods, a moment after the pod runs: until
    then the pod's traffic passes unjudged.  (CNIs that enforce as part of the pod's network
    set-up have no such moment.)"""
    rules = _iptables("iptables", "-t", "filter", "-S", "KUBE-ROUTER-FORWARD")
    return f"-s {pod_ip}/32" in rules and f"-d {pod_ip}/32" in rules


def wait_fenced(cluster: Cluster, *pod_ips: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not all(fences(ip) for ip in pod_ips):
        cluster.processes.check()
        if time.monotonic() > deadline:
            missing = [ip for ip in pod_ips if not fences(ip)]
            raise TimeoutError(f"{NAME} has no firewall chain for {missing} after {timeout} s")
        time.sleep(0.2)


def _iptables(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout


def stop(cluster: Cluster) -> None:
    """Stop enforcing: the process ends and its rules go (policies stay stored in the API)."""
    cluster.processes.stop(NAME)
    remove()


OWN_CHAIN = re.compile(r"KUBE-(ROUTER|NWPLCY|POD-FW)-[A-Z0-9-]+")


def remove() -> None:
    """Every jump, chain and ipset of the enforcer's (and nothing else)."""
    remove_chains(OWN_CHAIN)
    sets = _iptables("ipset", "list", "-n").split()
    for name in sets:
        # Its policy sets, and the TMP-<hash> sets it swaps them through.
        if re.fullmatch(r"(inet6:)?(KUBE-(SRC|DST)|TMP)-[A-Z0-9]+", name):
            subprocess.run(["ipset", "destroy", name], capture_output=True)
