"""Isolation probes: each runs as code in a kernel and asserts that the kernel is contained.

No probe sends traffic to an outside or public address: reachability is judged from the
kernel's routing table and interfaces and from the network's configuration.

Every probe runs in every language's kernel: Python's runs the probe itself, the others start it
as a Python subprocess (``testkit.languages``), which is code in that kernel's box all the same.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import struct
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from jupyter_kernel_client import GatewayKernelSession
from testkit.languages import LANGUAGES, python_probe

from .conftest import Stack, docker, kernel_network_name

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["python3", *sorted(LANGUAGES)])
def kernel(stack: Stack, request: pytest.FixtureRequest) -> Iterator[GatewayKernelSession]:
    with GatewayKernelSession(
        stack.gateway_http, stack.gateway_ws, str(request.param), gateway_token=stack.gateway_token
    ) as session:
        yield session


def probe(session: GatewayKernelSession, code: str) -> Any:
    """Run Python code that prints one JSON document in the session's kernel; return it decoded."""
    result = session.execute(python_probe(session.kernel_name, code), timeout=60)
    assert result.error is None, result.error
    return json.loads(result.stdout)


def test_runs_as_non_root(kernel: GatewayKernelSession) -> None:
    ids = probe(
        kernel, "import os, json; print(json.dumps([os.getuid(), os.geteuid(), os.getgid()]))"
    )
    assert ids[0] != 0 and ids[1] != 0
    assert ids == [1000, 1000, 100]


def test_no_capabilities(kernel: GatewayKernelSession) -> None:
    caps = probe(
        kernel,
        "import json\n"
        "status = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines())\n"
        "keys = ('CapEff', 'CapPrm', 'CapBnd', 'NoNewPrivs')\n"
        "print(json.dumps({k: status[k].strip() for k in keys}))",
    )
    assert int(caps["CapEff"], 16) == 0
    assert int(caps["CapPrm"], 16) == 0
    assert int(caps["CapBnd"], 16) == 0
    assert caps["NoNewPrivs"] == "1"


def test_root_filesystem_is_read_only_but_tmp_and_shared_are_writable(
    kernel: GatewayKernelSession,
) -> None:
    outcome = probe(
        kernel,
        "import json, errno\n"
        "def attempt(path):\n"
        "    try:\n"
        "        open(path, 'w').write('x')\n"
        "        return 'ok'\n"
        "    except OSError as e:\n"
        "        return errno.errorcode[e.errno]\n"
        "print(json.dumps({p: attempt(p) for p in ['/probe', '/usr/probe', '/opt/venv/probe',"
        " '/tmp/probe', '/data/shared/.probe']}))",
    )
    assert outcome["/probe"] in ("EROFS", "EACCES")
    assert outcome["/usr/probe"] in ("EROFS", "EACCES")
    assert outcome["/opt/venv/probe"] in ("EROFS", "EACCES")
    assert outcome["/tmp/probe"] == "ok"
    assert outcome["/data/shared/.probe"] == "ok"


def test_no_docker_socket_and_no_host_processes(kernel: GatewayKernelSession) -> None:
    seen = probe(
        kernel,
        "import json, os, glob\n"
        "socks = [p for p in glob.glob('/var/run/*.sock') + glob.glob('/run/*.sock')"
        " + glob.glob('/var/run/docker*') + glob.glob('/run/docker*')]\n"
        "cmds = []\n"
        "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "    try:\n"
        "        raw = open(f'/proc/{pid}/cmdline', 'rb').read()\n"
        "        cmds.append(raw.replace(b'\\0', b' ').decode())\n"
        "    except OSError:\n"
        "        pass\n"
        "print(json.dumps({'socks': socks, 'cmds': cmds}))",
    )
    assert seen["socks"] == []
    # Only the container's own processes are visible: docker-init and the kernel, nothing of the
    # gateway (jupyter enterprisegateway), dockerd or the host.
    joined = "\n".join(seen["cmds"])
    assert "enterprisegateway" not in joined
    assert "dockerd" not in joined and "containerd" not in joined
    assert len(seen["cmds"]) <= 6, seen["cmds"]


def _route_table(kernel: GatewayKernelSession) -> dict[str, Any]:
    return dict(
        probe(
            kernel,
            "import json, os\n"
            "print(json.dumps({'route': open('/proc/net/route').read(),"
            " 'ifaces': sorted(os.listdir('/sys/class/net'))}))",
        )
    )


def test_no_route_off_the_kernel_network(stack: Stack, kernel: GatewayKernelSession) -> None:
    seen = _route_table(kernel)
    # One interface besides loopback: the kernel network.  No second network, no host network.
    assert seen["ifaces"] == ["eth0", "lo"]

    network = json.loads(docker("network", "inspect", kernel_network_name(kernel.kernel_id)))[0]
    assert network["Internal"] is True
    assert network["Options"].get("com.docker.network.bridge.inhibit_ipv4") == "true"
    subnet = ipaddress.ip_network(network["IPAM"]["Config"][0]["Subnet"])

    gateways = []
    for line in seen["route"].splitlines()[1:]:
        fields = line.split()
        iface, destination, gateway = fields[0], fields[1], fields[2]
        assert iface == "eth0"
        hop = ipaddress.ip_address(socket.inet_ntoa(struct.pack("<L", int(gateway, 16))))
        if int(destination, 16) == 0:
            gateways.append(hop)
    # Any default route points into the kernel network itself, at an address that no host
    # interface carries (inhibit_ipv4): packets sent there go nowhere.
    host_addresses = subprocess.run(
        ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=False
    ).stdout
    for hop in gateways:
        assert hop in subnet
        assert f" {hop}/" not in host_addresses, f"default gateway {hop} is a host address"

    # The kernel network has three members: this kernel, the gateway and (egress is on in this
    # stack) the egress container, at the network's last address.
    members = {c["Name"]: c["IPv4Address"] for c in network["Containers"].values()}
    assert len(members) == 3, members
    assert any(name.endswith(kernel.kernel_id) for name in members)
    assert any("gateway" in name for name in members)
    (egress,) = (address for name, address in members.items() if "egress" in name)
    assert egress == f"{subnet[-2]}/{subnet.prefixlen}"


def test_gateway_is_the_only_service_reachable(stack: Stack, kernel: GatewayKernelSession) -> None:
    reach = probe(
        kernel,
        "import json, socket\n"
        "def resolves(name):\n"
        "    try:\n"
        "        return socket.gethostbyname(name)\n"
        "    except OSError:\n"
        "        return None\n"
        "names = ['sandbox-gateway', 'notebook', 'fileserver']\n"
        "print(json.dumps({n: resolves(n) for n in names}))",
    )
    assert reach["sandbox-gateway"] is not None
    assert reach["notebook"] is None
    assert reach["fileserver"] is None


def test_container_carries_the_hardening(stack: Stack, kernel: GatewayKernelSession) -> None:
    info = stack.kernel_container(kernel.kernel_id)
    host = info["HostConfig"]
    assert info["Config"]["User"] == "1000:100"
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["ReadonlyRootfs"] is True
    assert host["Privileged"] is False
    assert host["PidsLimit"] == 256
    assert host["Memory"] == 512 * 1024**2
    assert host["NanoCpus"] == 1_000_000_000
    assert host["OomScoreAdj"] == 1000
    # The shared volume, and (egress is on in this stack) the egress CA's certificate, read-only.
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert sorted(mounts) == ["/data/shared", "/etc/sandbox-egress"]
    assert mounts["/etc/sandbox-egress"]["RW"] is False
    assert mounts["/etc/sandbox-egress"]["Name"] == stack.egress_ca_volume
    assert all("docker.sock" not in (m.get("Source") or "") for m in info["Mounts"])
    assert list(info["NetworkSettings"]["Networks"]) == [kernel_network_name(kernel.kernel_id)]


def test_a_kernel_starts_as_the_oom_killers_first_choice_and_cannot_go_below_the_services(
    stack: Stack, kernel: GatewayKernelSession
) -> None:
    # Kernels overcommit the host's memory (the cap counts a kernel at its idle footprint): if
    # the host runs out, the kernel OOM killer is to take a kernel.  A kernel starts at the top
    # score; without CAP_SYS_RESOURCE it cannot go below the services' 0 (where the runtime has
    # that capability, not below its 1000 either).
    start, tried = probe(
        kernel,
        "import json, os\n"
        "start = open('/proc/self/oom_score_adj').read().strip()\n"
        "def lower(value):\n"
        "    try:\n"
        "        fd = os.open('/proc/self/oom_score_adj', os.O_WRONLY)\n"
        "        try:\n"
        "            os.write(fd, value.encode())\n"
        "        finally:\n"
        "            os.close(fd)\n"
        "    except OSError as e:\n"
        "        return type(e).__name__\n"
        "    return 'lowered'\n"
        "print(json.dumps([start, {v: lower(v) for v in ('-1000', '-500', '-1')}]))",
    )
    assert start == "1000"
    assert tried == dict.fromkeys(("-1000", "-500", "-1"), "PermissionError")
    for service in ("gateway", "egress", "notebook", "fileserver"):
        info = json.loads(docker("inspect", stack.container(service)))[0]
        assert info["HostConfig"]["OomScoreAdj"] <= 0, service


def test_kernel_environment_holds_no_gateway_settings(kernel: GatewayKernelSession) -> None:
    names = probe(kernel, "import os, json; print(json.dumps(sorted(os.environ)))")
    leaked = [n for n in names if n.startswith(("EG_", "SANDBOX_", "DOCKER"))]
    assert leaked == []


def test_fork_bomb_hits_the_pids_limit(stack: Stack) -> None:
    with GatewayKernelSession(
        stack.gateway_http, stack.gateway_ws, "python3", gateway_token=stack.gateway_token
    ) as session:
        outcome = probe(session, FORK_BOMB_PROBE)
        assert outcome["hit"], "the bomb never hit the pids limit"
        assert outcome["peak"] <= 256
        # The bomb's processes can be killed (docker-init reaps them) and the kernel answers.
        assert outcome["after"] < 10
        assert str(session.execute("1 + 1")) == "2"


# Every process of the bomb forks until a deadline; at the pids limit fork fails (EAGAIN) and it
# notes that in /tmp.  The kernel watches the process count, then kills the bomb's group.
FORK_BOMB_PROBE = """
import json, os, signal, subprocess, sys, time
bomb = '''
import os, time
deadline = time.monotonic() + 4
while time.monotonic() < deadline:
    try:
        os.fork()
    except OSError:
        open('/tmp/bomb-hit-limit', 'a').write('x')
        time.sleep(0.5)
'''
def count():
    return sum(1 for d in os.listdir('/proc') if d.isdigit())
p = subprocess.Popen([sys.executable, '-c', bomb], start_new_session=True)
peak = 0
end = time.monotonic() + 6
while time.monotonic() < end:
    peak = max(peak, count())
    time.sleep(0.1)
os.killpg(p.pid, signal.SIGKILL)
p.wait()
stop = time.monotonic() + 20
after = count()
while after >= 10 and time.monotonic() < stop:
    time.sleep(0.2)
    after = count()
print(json.dumps({'peak': peak, 'hit': os.path.exists('/tmp/bomb-hit-limit'), 'after': after}))
"""
