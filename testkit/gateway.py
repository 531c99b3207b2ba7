"""A real Jupyter Enterprise Gateway 3.3 for tests: its own cached venv, local kernels.

EG pins jupyter_client<7 / jupyter_server<2, so it never shares an environment with the
client under test.  The venv is created once and reused (``SANDBOX_GATEWAY_VENV`` overrides
where); the gateway loads the same config file as the gateway image.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import requests

from testkit.venvs import TYPE_CHECK_REQUIREMENTS, cached_venv

REPO = Path(__file__).resolve().parents[1]
GATEWAY_CONFIG = REPO / "sandbox_gateway" / "etc" / "jupyter_enterprise_gateway_config.py"
GATEWAY_REQUIREMENTS = [
    "jupyter_enterprise_gateway==3.3.0",
    "ipykernel>=6.29,<7",
    "dnspython==2.9.2",  # sandbox_gateway.egress, as in the gateway image
    # mypy checks sandbox_gateway here, against EG's own code (tests/integration/gateway/
    # test_gateway_types.py); the gateway never imports them.
    *TYPE_CHECK_REQUIREMENTS,
    "types-docker",
    "types-PyYAML",
]
DEFAULT_VENV = Path.home() / ".cache" / "mini-jupyter-sandbox" / "eg-3.3.0"
KERNEL_REQUIREMENTS = REPO / "images" / "kernel-python" / "requirements.txt"


def gateway_venv() -> Path:
    """The gateway's venv, created on first use and given what ``GATEWAY_REQUIREMENTS`` adds
    later (safe against concurrent creators)."""
    venv = Path(os.environ.get("SANDBOX_GATEWAY_VENV", DEFAULT_VENV))
    return cached_venv(venv, GATEWAY_REQUIREMENTS)


def kernel_launchers() -> Path:
    """gateway_provisioners' Python kernel launcher, assembled as in the kernel image.

    Returns a directory holding ``launch_ipykernel.py`` beside the real ``server_listener.py``
    (what ``jupyter image-bootstrap install`` does), from the version the kernel image pins.
    gateway_provisioners requires jupyter_client>=7.4, which EG 3.3's venv cannot hold, so only
    its files are fetched; the launcher itself imports nothing that venv lacks (ipykernel,
    jupyter_client, pycryptodomex), and runs there as the kernel side of tests.
    """
    pin = next(
        line.strip()
        for line in KERNEL_REQUIREMENTS.read_text().splitlines()
        if line.startswith("gateway_provisioners==")
    )
    version = pin.split("==", 1)[1]
    launchers = DEFAULT_VENV.parent / f"kernel-launchers-{version}"
    marker = launchers / ".complete"
    if marker.exists():
        return launchers
    launchers.parent.mkdir(parents=True, exist_ok=True)
    with open(DEFAULT_VENV.parent / f".{launchers.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            shutil.rmtree(launchers, ignore_errors=True)
            with tempfile.TemporaryDirectory() as target:
                pip = gateway_venv() / "bin" / "pip"
                subprocess.run(
                    [str(pip), "install", "-q", "--no-deps", "--target", target, pin], check=True
                )
                package = Path(target) / "gateway_provisioners" / "kernel-launchers"
                launchers.mkdir(parents=True)
                shutil.copy(package / "python" / "scripts" / "launch_ipykernel.py", launchers)
                shutil.copy(package / "shared" / "scripts" / "server_listener.py", launchers)
            marker.touch()
    return launchers


LAUNCHER_ARGUMENTS = (
    "--kernel-id",
    "{kernel_id}",
    "--port-range",
    "{port_range}",
    "--response-address",
    "{response_address}",
    "--public-key",
    "{public_key}",
)
"""What a remote kernel's launcher is given in its kernelspec's ``argv``; the gateway fills in the
placeholders."""

LOCAL_LAUNCHER_PROXY = "local_launcher_proxy.LocalLauncherProcessProxy"
"""The test-only process proxy (tests/integration/gateway/local_launcher_proxy.py): it runs a
kernel's launcher as a local process, which answers over the response address as a container
kernel does."""


def local_launcher_argv() -> list[str]:
    """gateway_provisioners' Python launcher (``kernel_launchers()``) in the gateway's venv."""
    return [
        str(gateway_venv() / "bin" / "python"),
        str(kernel_launchers() / "launch_ipykernel.py"),
        *LAUNCHER_ARGUMENTS,
        "--spark-context-initialization-mode",
        "none",
    ]


def add_local_launcher_kernelspec(root: Path, name: str, argv: list[str]) -> None:
    """Kernelspec ``name`` in ``root`` (a ``JUPYTER_PATH`` entry), started by ``argv`` through
    ``LOCAL_LAUNCHER_PROXY``."""
    spec = {
        "display_name": f"{name} (test: local kernel launcher)",
        "language": "python",
        "argv": argv,
        "metadata": {"process_proxy": {"class_name": LOCAL_LAUNCHER_PROXY}},
    }
    (root / "kernels" / name).mkdir(parents=True)
    (root / "kernels" / name / "kernel.json").write_text(json.dumps(spec))


def local_launcher_env(kernelspecs: Path, proxy_path: str, launch_timeout: float) -> dict[str, str]:
    """A gateway's environment for ``LOCAL_LAUNCHER_PROXY`` kernels: their kernelspecs in
    ``kernelspecs``, the proxy's module in ``proxy_path``, their answers over a response address
    on 127.0.0.1 within ``launch_timeout`` seconds."""
    return {
        "JUPYTER_PATH": str(kernelspecs),
        "PYTHONPATH": proxy_path,
        "EG_RESPONSE_IP": "127.0.0.1",
        "EG_RESPONSE_PORT": str(free_port()),
        "EG_KERNEL_LAUNCH_TIMEOUT": str(launch_timeout),
        "EG_POLL_INTERVAL": "0.05",  # as in the gateway image
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Gateway:
    """One Enterprise Gateway process on a loopback port; start/stop may be repeated."""

    def __init__(
        self,
        port: int | None = None,
        env: dict[str, str] | None = None,
        config: Path | None = GATEWAY_CONFIG,
        ip: str = "127.0.0.1",
        command: list[str] | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        """``config=None`` runs stock Enterprise Gateway, without the sandbox's config/patches;
        ``command`` replaces ``jupyter enterprisegateway`` (the venv's), ``args`` follow the
        test gateway's own options."""
        self.port = port or free_port()
        self._config = config
        self._ip = ip
        self._command = command
        self._args = args
        self.http = f"http://{ip}:{self.port}"
        self.ws = f"ws://{ip}:{self.port}"
        self._extra_env = env or {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="eg-test-"))
        self.log_path = self._dir / "gateway.log"

    def start(self, wait: bool = True) -> Gateway:
        venv = gateway_venv()
        env = {
            **os.environ,
            "JUPYTER_RUNTIME_DIR": str(self._dir / "runtime"),
            "JUPYTER_DATA_DIR": str(self._dir / "data"),
            "JUPYTER_CONFIG_DIR": str(self._dir / "config"),
            "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "EG_LIST_KERNELS": "True",
            # Test gateways run many kernels on machines of any size: a fixed cap, not the default
            # sized from the host's memory (tests of the limits set their own).
            "SANDBOX_MAX_KERNELS": "64",
            # As in the gateway image: a config file that raises stops the gateway.
            "TRAITLETS_APPLICATION_RAISE_CONFIG_FILE_ERROR": "true",
            # Local kernels get their TCP ports below Linux's ephemeral range (32768-60999), so
            # the outgoing connections of the gateway and the tests cannot take a port between
            # the gateway choosing it and the kernel binding it ("Address already in use").
            "EG_PORT_RANGE": "20000..30000",
            **self._extra_env,
        }
        # The config file imports sandbox_gateway from this checkout, as the image's venv does.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env.pop("VIRTUAL_ENV", None)
        with open(self.log_path, "ab") as log:
            self._proc = self._spawn(venv, env, log)
        if wait:
            self.wait_ready()
        return self

    def _spawn(self, venv: Path, env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                *(self._command or [str(venv / "bin" / "jupyter"), "enterprisegateway"]),
                f"--ip={self._ip}",
                f"--port={self.port}",
                "--port_retries=0",
                *([f"--config={self._config}"] if self._config is not None else []),
                *self._args,
            ],
            cwd=self._dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so that stop() also reaps the kernels it started
        )

    def wait_ready(self, timeout: float = 60, headers: dict[str, str] | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"gateway exited early:\n{self.log()}")
            try:
                url = self.http + "/api/kernelspecs"
                if requests.get(url, headers=headers, timeout=2).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gateway not ready after {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # Kernels are in the gateway's process group: make sure none outlives it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def crash(self) -> None:
        """SIGKILL the gateway, as an OOM kill would; kernels in sessions of their own live on."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def kernels(self) -> list[dict[str, object]]:
        response = requests.get(self.http + "/api/kernels", timeout=10)
        response.raise_for_status()
        result: list[dict[str, object]] = response.json()
        return result

    def shutdown_kernel(self, kernel_id: str) -> None:
        """Shut a kernel down; one already gone is fine."""
        response = requests.delete(f"{self.http}/api/kernels/{kernel_id}", timeout=60)
        if response.status_code != 404:
            response.raise_for_status()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""


@contextlib.contextmanager
def locked_gateway(token: str) -> Iterator[Gateway]:
    """A gateway that takes only ``token`` (Enterprise Gateway's single ``EG_AUTH_TOKEN``)."""
    gateway = Gateway(env={"EG_AUTH_TOKEN": token}).start(wait=False)
    try:
        gateway.wait_ready(headers={"Authorization": f"token {token}"})
        yield gateway
    finally:
        gateway.stop()
