"""``mini-sandbox sessions``: start (left running), ls, stop, unknown ids."""

from __future__ import annotations

import json

from testkit.gateway import Gateway
from tests.integration.cli.cli_harness import Cli


def test_start_ls_stop_round_trip(cli: Cli, gateway: Gateway) -> None:
    started = cli("sessions", "start", "--json")
    assert started.returncode == 0, started.stderr
    document = json.loads(started.stdout)
    kernel_id = document["id"]
    assert document["name"] == "python3"
    assert kernel_id in {k["id"] for k in gateway.kernels()}, "left running"

    listing = cli("sessions", "ls", "--json")
    models = json.loads(listing.stdout)
    ours = [m for m in models if m["id"] == kernel_id]
    assert len(ours) == 1 and ours[0]["name"] == "python3"
    assert set(ours[0]) >= {"execution_state", "connections", "last_activity"}
    table = cli("sessions", "ls").stdout.splitlines()
    assert table[0].split() == ["ID", "KERNEL", "STATE", "CONNECTIONS", "LAST", "ACTIVITY"]
    row = next(line for line in table if line.startswith(kernel_id))
    assert row.split()[1] == "python3"

    stopped = cli("sessions", "stop", kernel_id)
    assert stopped.returncode == 0, stopped.stderr
    assert kernel_id not in {k["id"] for k in gateway.kernels()}
    assert kernel_id not in {m["id"] for m in json.loads(cli("sessions", "ls", "--json").stdout)}
    assert kernel_id not in cli("sessions", "ls").stdout


def test_an_unknown_id_exits_4(cli: Cli) -> None:
    for args in (
        ("sessions", "stop", "no-such-id"),
        ("sh", "--session", "no-such-id", "--", "true"),
    ):
        done = cli(*args)
        assert done.returncode == 4, done.stderr
        assert (
            done.stderr
            == "mini-sandbox: no such session: no-such-id (see: mini-sandbox sessions ls)\n"
        )


def test_an_unknown_kernel_name_exits_4(cli: Cli) -> None:
    done = cli("sessions", "start", "--kernel", "no-such-kernel")
    assert done.returncode == 4
    assert "no kernel named 'no-such-kernel'" in done.stderr
    assert len(done.stderr.splitlines()) == 1
