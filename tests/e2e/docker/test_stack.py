"""The user's README flows against the compose stack."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import pytest
import requests

from jupyter_kernel_client import GatewayKernelSession, UnknownKernelNameError
from testkit.gateway import free_port
from testkit.languages import LANGUAGES

from .conftest import REPO, Stack, docker

pytestmark = pytest.mark.integration


def test_readme_sync_flow(stack: Stack) -> None:
    with GatewayKernelSession(stack.gateway_http, stack.gateway_ws, "python3") as session:
        assert str(session.execute("2 + 2")) == "4"
        printed = session.execute("print('hello from the sandbox')")
        assert printed.stdout == "hello from the sandbox\n"
        failed = session.execute("1 / 0")
        assert failed.error is not None and failed.error.ename == "ZeroDivisionError"


def test_readme_async_flow(stack: Stack) -> None:
    from jupyter_kernel_client import AsyncGatewayKernelSession

    async def main() -> str:
        async with AsyncGatewayKernelSession(
            stack.gateway_http, stack.gateway_ws, "python3"
        ) as session:
            result = await session.execute("print('Hello, async world!')")
            return result.stdout

    assert asyncio.run(main()) == "Hello, async world!\n"


def test_both_python_kernelspecs_run_in_containers(stack: Stack) -> None:
    specs = requests.get(
        f"{stack.gateway_http}/api/kernelspecs", headers=stack.auth, timeout=10
    ).json()
    # The gateway offers exactly the containerized kernels, python3 the default (the other
    # languages' are tested in test_languages).
    assert specs["default"] == "python3"
    assert sorted(specs["kernelspecs"]) == sorted(["python3", "sandbox-python", *LANGUAGES])
    for name in ("python3", "sandbox-python"):
        with GatewayKernelSession(stack.gateway_http, stack.gateway_ws, name) as session:
            hostname = str(session.execute("import socket; socket.gethostname()")).strip("'")
            container = stack.kernel_container(session.kernel_id)
            assert container["Config"]["Hostname"] == hostname


def test_plots_come_back_as_png(stack: Stack) -> None:
    with GatewayKernelSession(stack.gateway_http, stack.gateway_ws, "python3") as session:
        result = session.execute("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()")
        assert result.error is None, result.error
        assert result.images and result.images[0].startswith(b"\x89PNG")


def test_unknown_kernel_name_is_a_plain_404(stack: Stack) -> None:
    response = requests.post(
        f"{stack.gateway_http}/api/kernels",
        json={"name": "nope", "env": {"KERNEL_USERNAME": "jovyan"}},
        headers=stack.auth,
        timeout=10,
    )
    assert response.status_code == 404
    body = response.json()
    assert body["reason"] == "No such kernel named nope"
    assert "traceback" not in body and "Traceback" not in response.text
    with pytest.raises(UnknownKernelNameError):
        GatewayKernelSession(stack.gateway_http, stack.gateway_ws, "nope").start()


def test_malformed_start_request_is_a_4xx_without_traceback(stack: Stack) -> None:
    response = requests.post(
        f"{stack.gateway_http}/api/kernels", json={"name": 5}, headers=stack.auth, timeout=10
    )
    assert response.status_code == 400
    assert "Traceback" not in response.text


def test_kernel_file_is_served_by_file_server_and_seen_by_notebook(stack: Stack) -> None:
    name = f"e2e-{uuid.uuid4().hex[:8]}.txt"
    with GatewayKernelSession(stack.gateway_http, stack.gateway_ws, "python3") as session:
        session.execute(
            f"with open('/data/shared/{name}', 'w') as f:\n    f.write('Hello from the kernel!')"
        ).raise_for_error()
    auth = {"Authorization": f"Bearer {stack.token}"}
    served = requests.get(f"{stack.file_server_url}/files/{name}", headers=auth, timeout=10)
    assert served.status_code == 200
    assert served.text == "Hello from the kernel!"
    # Without the token the file server refuses.
    assert requests.get(f"{stack.file_server_url}/files/{name}", timeout=10).status_code == 401
    seen = docker("exec", stack.container("notebook"), "cat", f"/home/jovyan/shared-data/{name}")
    assert seen == "Hello from the kernel!"


def test_file_uploaded_to_file_server_is_readable_in_kernel(stack: Stack) -> None:
    name = f"upload-{uuid.uuid4().hex[:8]}.csv"
    auth = {"Authorization": f"Bearer {stack.token}"}
    put = requests.put(
        f"{stack.file_server_url}/files/{name}", data=b"a,b\n1,2\n", headers=auth, timeout=10
    )
    assert put.status_code in (200, 201)
    with GatewayKernelSession(stack.gateway_http, stack.gateway_ws, "python3") as session:
        total = session.execute(
            f"import pandas as pd\nint(pd.read_csv('/data/shared/{name}').sum().sum())"
        )
    assert str(total) == "3"


EXAMPLES = ["basic_usage.py", "async_example.py", "metrics_example.py", "auth_example.py"]


@pytest.mark.parametrize("example", EXAMPLES)
def test_readme_example_runs_against_the_stack(stack: Stack, example: str) -> None:
    path = REPO / "examples" / example
    assert path.is_file(), f"examples/{example} is missing"
    env = dict(os.environ)
    env.update(
        {
            "GATEWAY_HTTP": stack.gateway_http,
            "GATEWAY_WS": stack.gateway_ws,
            "FILE_SERVER_URL": stack.file_server_url,
            "FILE_SERVER_TOKEN": stack.token,
            "SHARED_DIR": "/data/shared",
            # metrics_example serves Prometheus metrics: on a free port, not 8000.
            "METRICS_PORT": str(free_port()),
        }
    )
    done = subprocess.run(
        [sys.executable, str(path)], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, f"{example} failed:\n{done.stdout}\n{done.stderr}"
