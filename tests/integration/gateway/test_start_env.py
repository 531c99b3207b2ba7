"""A start request's ``env`` reaches its own kernel and no other, under concurrent starts.

Stock Enterprise Gateway 3.3 handed a request's env to the kernel manager by swapping the
manager's ``start_kernel`` for a ``functools.partial`` carrying it, and swapping it back when the
request ended.  Two overlapping starts A and B with an env, A ending first, left A's partial in
place for good: every later start without an env ran with A's env (user, KERNEL_* variables,
kernel id).  ``sandbox_gateway.http.patches`` passes each request's env to its own start instead.

The kernels run gateway_provisioners' real launcher through the test-only
``local_launcher_proxy.LocalLauncherProcessProxy``, whose ``KERNEL_TEST_LAUNCH_DELAY`` makes one
start take seconds longer than another: that fixes the order in which A and B end.
"""

from __future__ import annotations

import getpass
import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from jupyter_kernel_client import GatewayKernelSession
from testkit.gateway import (
    Gateway,
    add_local_launcher_kernelspec,
    local_launcher_argv,
    local_launcher_env,
)

KERNEL = "launcher-python"
LAUNCH_TIMEOUT = 30  # seconds; covers the slowest start below, its delay included
B_AFTER = 0.5  # seconds between sending A and sending B, well inside A's start (>= 2 s)
SHOWN = ("KERNEL_USERNAME", "KERNEL_ID", "KERNEL_MARK", "KERNEL_TEST_LAUNCH_DELAY")

KERNEL_VARIABLES = (
    "import json, os; "
    "print(json.dumps({k: v for k, v in os.environ.items() if k.startswith('KERNEL_')}))"
)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    share = tmp_path_factory.mktemp("share")
    add_local_launcher_kernelspec(share, KERNEL, local_launcher_argv())
    gateway = Gateway(
        env={
            **local_launcher_env(share, os.path.dirname(__file__), LAUNCH_TIMEOUT),
            # A start without KERNEL_USERNAME runs as the gateway's own user (root here).
            "EG_UNAUTHORIZED_USERS": "nobody-in-particular",
        }
    )
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture
def kernel_ids(gw: Gateway) -> Iterator[list[str]]:
    """Ids of the kernels a test started; every one is shut down afterwards."""
    ids: list[str] = []
    yield ids
    for kernel_id in ids:
        requests.delete(f"{gw.http}/api/kernels/{kernel_id}", timeout=30)


class Start:
    """One ``POST /api/kernels``, sent from a thread of its own."""

    def __init__(self, gw: Gateway, env: dict[str, str] | None) -> None:
        self.body: dict[str, Any] = {"name": KERNEL}
        if env is not None:
            self.body["env"] = env
        self._url = f"{gw.http}/api/kernels"
        self.response: requests.Response | None = None
        self.sent = self.ended = 0.0
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        try:
            self.response = requests.post(self._url, json=self.body, timeout=LAUNCH_TIMEOUT + 30)
        finally:
            self.ended = time.monotonic()

    def send(self) -> Start:
        self.sent = time.monotonic()
        self._thread.start()
        return self

    def kernel_id(self, kernel_ids: list[str]) -> str:
        """Wait for the answer; a started kernel is recorded for shutdown before any assert."""
        self._thread.join()
        assert self.response is not None
        if self.response.status_code == 201:
            kernel_ids.append(self.response.json()["id"])
        assert self.response.status_code == 201, self.response.text
        return str(self.response.json()["id"])


def kernel_variables(gw: Gateway, kernel_id: str) -> dict[str, str | None]:
    """The variables under test that the kernel's process runs with (None: not set)."""
    with GatewayKernelSession(gw.http, gw.ws, KERNEL, kernel_id=kernel_id) as kernel:
        result = kernel.execute(KERNEL_VARIABLES)
        result.raise_for_error()
        variables: dict[str, str] = json.loads(result.stdout)
    return {name: variables.get(name) for name in SHOWN}


def expected(kernel_id: str, env: dict[str, str] | None = None) -> dict[str, str | None]:
    """What a kernel started with ``env`` (None: a request without one) must run with."""
    env = env or {"KERNEL_USERNAME": getpass.getuser()}  # EG's default user: the gateway's
    return {name: kernel_id if name == "KERNEL_ID" else env.get(name) for name in SHOWN}


def test_overlapping_starts_keep_their_env_and_leave_none_to_later_starts(
    gw: Gateway, kernel_ids: list[str]
) -> None:
    alice = {"KERNEL_USERNAME": "alice", "KERNEL_MARK": "a", "KERNEL_TEST_LAUNCH_DELAY": "2"}
    bob = {"KERNEL_USERNAME": "bob", "KERNEL_MARK": "b", "KERNEL_TEST_LAUNCH_DELAY": "5"}
    a = Start(gw, alice).send()
    time.sleep(B_AFTER)
    b = Start(gw, bob).send()
    a_id, b_id = a.kernel_id(kernel_ids), b.kernel_id(kernel_ids)
    # The interleaving that leaked: B began while A was starting, and ended after A.
    assert b.sent < a.ended < b.ended, "the starts did not overlap in the order under test"
    assert kernel_variables(gw, a_id) == expected(a_id, alice)
    assert kernel_variables(gw, b_id) == expected(b_id, bob)

    # Starts without an env: while A and B run, and after they are gone.
    c_id = Start(gw, None).send().kernel_id(kernel_ids)
    assert kernel_variables(gw, c_id) == expected(c_id)
    for kernel_id in (a_id, b_id):
        assert requests.delete(f"{gw.http}/api/kernels/{kernel_id}", timeout=30).status_code == 204
    d_id = Start(gw, None).send().kernel_id(kernel_ids)
    assert kernel_variables(gw, d_id) == expected(d_id)
