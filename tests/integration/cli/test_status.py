"""``mini-sandbox status`` against a real gateway (the sandbox's and a stock one), a real file
server and a real Jupyter Server (the notebook image's)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from testkit.gateway import Gateway, free_port
from testkit.venvs import notebook_venv
from tests.integration.cli.cli_harness import Cli
from tests.integration.fileserver.fileserver_harness import FileServer


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Jupyter Server 2 of the notebook image's pins, without login (as on loopback)."""
    root = tmp_path_factory.mktemp("notebook")
    port = free_port()
    argv = [
        str(notebook_venv() / "bin" / "jupyter-server"),
        f"--port={port}",
        "--ip=127.0.0.1",
        "--ServerApp.token=",
        "--ServerApp.open_browser=False",
        "--allow-root",
        f"--ServerApp.root_dir={root}",
    ]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(root), "JUPYTER_CONFIG_DIR": str(root / "cfg")}
    with (root / "server.log").open("wb") as log:
        proc = subprocess.Popen(argv, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(url + "/api", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (
                root / "server.log"
            ).read_text()
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def status_cli(files_cli: Cli, notebook: str) -> Cli:
    return Cli(files_cli.cwd, {**files_cli.env, "NOTEBOOK_URL": notebook})


def test_every_service_answers(status_cli: Cli, gateway: Gateway, file_server: FileServer) -> None:
    kernel_id = status_cli("sessions", "start").stdout.strip()
    try:
        done = status_cli("status", "--json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
    finally:
        status_cli("sessions", "stop", kernel_id)
    assert set(report) == {"gateway", "notebook", "file_server"}
    gw = report["gateway"]
    assert (gw["url"], gw["state"], gw["version"]) == (gateway.http, "up", "0.1.0")
    assert gw["enterprise_gateway"] == "3.3.0"
    assert gw["tenant"] is None  # the test gateway has no tenants
    kernels = gw["kernels"]
    assert kernels["yours"] >= 1 and kernels["total"] >= kernels["yours"]
    assert kernels["total_limit"] == 64  # SANDBOX_MAX_KERNELS of the test gateway
    assert isinstance(gw["pool"], dict)
    assert report["notebook"]["state"] == "up"
    assert report["notebook"]["version"].startswith("2.")  # jupyter_server 2
    assert report["file_server"] == {
        "url": file_server.base_url,
        "state": "up",
        "error": None,
        "version": "0.1.0",
    }
    table = status_cli("status").stdout
    assert "kernels: yours" in table and "of 64" in table and "warm pool:" in table


def test_a_service_down_exits_3_and_says_which(status_cli: Cli) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    done = status_cli("--notebook", closed, "status", "--json")
    assert done.returncode == 3
    report = json.loads(done.stdout)  # the document is still whole
    assert (
        report["notebook"]["state"] == "down"
        and "Connection refused" in report["notebook"]["error"]
    )
    assert report["gateway"]["state"] == "up"
    assert done.stderr.splitlines() == [
        "mini-sandbox: not answering: notebook: is the stack up? (./test_env.sh)"
    ]


def test_a_stock_gateway_gives_its_version_only(status_cli: Cli, tmp_path: Path) -> None:
    stock = Gateway(config=None).start()
    try:
        done = status_cli("--gateway", stock.http, "status", "--json")
    finally:
        stock.stop()
    assert done.returncode == 0, done.stderr
    gw = json.loads(done.stdout)["gateway"]
    assert gw["state"] == "up" and gw["enterprise_gateway"] == "3.3.0"
    assert gw["version"] is None and gw["kernels"] is None and gw["pool"] is None
    assert "stock gateway" in gw["note"]
