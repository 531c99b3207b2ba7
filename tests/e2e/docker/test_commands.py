"""run_command in real kernel containers: a command is held in the kernel's box, and what it does
to that box (a fork bomb, processes left behind) ends with it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from jupyter_kernel_client import CommandTimeoutError, GatewayKernelSession

from .conftest import Stack

pytestmark = pytest.mark.integration

# The kernel's own view of its container, to compare with what a command sees.
KERNEL_VIEW = """
import json, os, socket
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "host": socket.gethostname(),
                  "cgroup": open("/proc/self/cgroup").read()}))
"""
# The live processes of the container (the launcher's listener is there before any command).
PROCESSES = """
import json, os
def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return not stat.read().split(") ")[1].startswith("Z")
    except OSError:
        return False  # gone between the listing and the read
print(json.dumps(sorted(int(p) for p in os.listdir("/proc") if p.isdigit() and _alive(p))))
"""


def settles_to(session: GatewayKernelSession, expected: object, within: float = 10) -> None:
    """The container's processes come to ``expected`` (killed ones are reaped by its init)."""
    deadline = time.monotonic() + within
    while (seen := view(session, PROCESSES)) != expected:
        assert time.monotonic() < deadline, f"processes {seen}, expected {expected}"
        time.sleep(0.2)


@pytest.fixture(params=["python3", "sandbox-python"], ids=["pooled", "cold"])
def session(request: pytest.FixtureRequest, stack: Stack) -> Iterator[GatewayKernelSession]:
    with GatewayKernelSession(stack.gateway_http, stack.gateway_ws, request.param) as s:
        yield s


def view(session: GatewayKernelSession, code: str) -> object:
    result = session.execute(code, timeout=60)
    assert result.error is None, result.error
    return json.loads(result.stdout)


def test_a_command_runs_in_the_kernel_s_box(session: GatewayKernelSession) -> None:
    kernel = view(session, KERNEL_VIEW)
    assert isinstance(kernel, dict)
    seen = session.run_command("id -u; id -g; hostname; cat /proc/self/cgroup")
    uid, gid, host, *cgroup = seen.stdout.splitlines()
    assert (int(uid), int(gid), host) == (kernel["uid"], kernel["gid"], kernel["host"])
    assert int(uid) != 0
    assert "\n".join(cgroup) + "\n" == kernel["cgroup"]
    # The read-only root and the capabilities of the box hold for the command too.
    root = session.run_command("touch /usr/probe")
    assert root.exit_code != 0 and "Read-only file system" in root.stderr
    caps = session.run_command("grep CapEff /proc/self/status").stdout.split()
    assert caps == ["CapEff:", "0000000000000000"]
    assert session.run_command(["sh", "-c", "echo ok > /tmp/probe && cat /tmp/probe"]).ok


def test_a_fork_bomb_ends_with_its_command(stack: Stack, session: GatewayKernelSession) -> None:
    with GatewayKernelSession(stack.gateway_http, stack.gateway_ws, "sandbox-python") as other:
        before = view(session, PROCESSES)
        # The shell forks once, for the bomb, and then becomes the sleep: nothing the bomb does
        # to the pid limit can end the command early (a fork that fails ends a non-interactive
        # shell, so a shell that forked or waited on after the bomb could end before its timeout).
        try:
            ended = session.run_command("bomb() { bomb | bomb & }; bomb & exec sleep 60", timeout=5)
        except CommandTimeoutError as exc:
            assert exc.result is not None
        else:
            pytest.fail(f"the command ended before its timeout: {ended!r}")
        settles_to(session, before)  # every process of the bomb is gone
        assert str(session.execute("1 + 1")) == "2"
        assert session.run_command("echo alive").stdout == "alive\n"
        # The neighbour never noticed.
        assert str(other.execute("2 + 2")) == "4"
        assert other.run_command("echo fine").stdout == "fine\n"


def test_a_command_cannot_leave_a_process_behind(session: GatewayKernelSession) -> None:
    before = view(session, PROCESSES)
    result = session.run_command("nohup sleep 600 >/dev/null 2>&1 & sleep 600 & echo left")
    assert result.stdout == "left\n"
    settles_to(session, before)
