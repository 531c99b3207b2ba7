"""etcd and kube-apiserver on loopback: a real API server with the admission a cluster runs.

The API server authorises with Node and RBAC and runs the default admission plugins (which
include ServiceAccount, LimitRanger, ResourceQuota, PodSecurity and the validating/mutating
webhooks and policies) plus NodeRestriction.  Everything lives in one directory: certificates,
etcd's data, logs and an admin kubeconfig (``KUBECONFIG`` for kubectl and helm).
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

import requests
import yaml  # type: ignore[import-untyped]

from testkit.cluster import build, pki
from testkit.cluster.processes import ProcessError, Processes
from testkit.gateway import free_port

SERVICE_CIDR = "10.96.0.0/16"
API_SERVICE_IP = "10.96.0.1"  # the first address of SERVICE_CIDR: the "kubernetes" Service
ADMISSION = "NodeRestriction,LimitRanger,ResourceQuota,PodSecurity,ServiceAccount"


class ControlPlaneError(ProcessError):
    """A process of the control plane did not start; the message carries its log's tail."""


def node_address() -> str:
    """This machine's own IPv4 address (the source of its default route).

    The API server advertises it in the "kubernetes" Service's endpoints, which may not be
    loopback: pods reach the API server there.  It is this machine's address, so traffic to it
    stays on the machine.
    """
    route = subprocess.run(
        ["ip", "-4", "route", "get", "10.255.255.255"], capture_output=True, text=True, check=False
    ).stdout
    match = re.search(r"\bsrc (\d+\.\d+\.\d+\.\d+)", route)
    if match is None:
        raise ControlPlaneError(f"no IPv4 address with a route on this machine: {route!r}")
    return match.group(1)


class ControlPlane:
    """etcd and kube-apiserver for one test run, in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.etcd_port = free_port()
        self.api_port = free_port()
        self.address = node_address()
        self.url = f"https://{self.address}:{self.api_port}"
        self.processes = Processes(directory)
        self.kubeconfig = directory / "admin.kubeconfig"

    # --- life -----------------------------------------------------------------------------------

    def start(self, timeout: float = 120) -> ControlPlane:
        etcd = build.etcd_binary()
        apiserver = build.kubernetes_binary("kube-apiserver")
        pki_dir = self.directory / "pki"
        self.authority = authority = pki.Authority(pki_dir)
        self.ca = authority.cert
        serving = authority.issue(
            "apiserver",
            "kube-apiserver",
            hosts=(
                self.address,
                "127.0.0.1",
                API_SERVICE_IP,
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
        )
        self.admin = authority.issue("admin", "admin", organizations=("system:masters",))
        # The API server's identity towards kubelets (logs, exec, port-forward).
        kubelet_client = authority.issue(
            "apiserver-kubelet-client", "kube-apiserver", organizations=("system:masters",)
        )
        self.accounts = accounts = pki.signing_key(pki_dir)
        self.write_kubeconfig(self.kubeconfig, self.admin)
        self.processes.spawn(
            "etcd",
            [
                str(etcd),
                "--name=test",
                f"--data-dir={self.directory / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{free_port()}",
                "--log-level=warn",
            ],
        )
        self.processes.spawn(
            "kube-apiserver",
            [
                str(apiserver),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                f"--bind-address={self.address}",
                f"--advertise-address={self.address}",
                "--anonymous-auth=false",
                f"--secure-port={self.api_port}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={authority.cert}",
                f"--service-account-key-file={accounts.cert}",
                f"--service-account-signing-key-file={accounts.key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                f"--enable-admission-plugins={ADMISSION}",
                "--allow-privileged=false",
                "--profiling=false",
                f"--kubelet-client-certificate={kubelet_client.cert}",
                f"--kubelet-client-key={kubelet_client.key}",
                f"--kubelet-certificate-authority={authority.cert}",
                "--kubelet-preferred-address-types=InternalIP",
            ],
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()  # a start that fails leaves no etcd or API server behind
            raise
        return self

    def stop(self) -> None:
        self.processes.stop()

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the API --------------------------------------------------------------------------------

    def session(self) -> requests.Session:
        """A requests session authenticated as the cluster's admin."""
        session = requests.Session()
        session.cert = (str(self.admin.cert), str(self.admin.key))
        session.verify = str(self.ca)
        return session

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        with self.session() as session:
            # verify per request: requests lets REQUESTS_CA_BUNDLE override a session's verify.
            return session.request(
                method, self.url + path, timeout=30, verify=str(self.ca), **kwargs
            )

    def log(self, name: str) -> str:
        return self.processes.log(name)

    # --- inside ---------------------------------------------------------------------------------

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.processes.check()
            except ProcessError as exc:
                raise ControlPlaneError(str(exc)) from None
            try:
                if self.request("GET", "/readyz").status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise ControlPlaneError(
            f"kube-apiserver not ready in {timeout:.0f}s:\n{self.log('kube-apiserver')[-3000:]}"
        )

    def write_kubeconfig(self, path: Path, user: pki.Pair) -> Path:
        """A kubeconfig for the API server's URL that authenticates with ``user``'s certificate."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {"server": self.url, "certificate-authority": str(self.ca)},
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate": str(user.cert),
                        "client-key": str(user.key),
                    },
                }
            ],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
            "current-context": "test",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path
