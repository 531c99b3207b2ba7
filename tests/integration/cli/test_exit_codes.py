"""The documented exit codes, each one line on stderr and never a traceback: 2 bad input
(nothing started), 3 cannot connect, 4 refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.gateway import Gateway, free_port
from testkit.gateway import locked_gateway as locked
from tests.integration.cli.cli_harness import Cli, base_env

TOKEN = "cli-test-token-93a1"


@pytest.fixture(scope="module")
def locked_gateway() -> Iterator[Gateway]:
    with locked(TOKEN) as gateway:
        yield gateway


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("run", "-c", "1", "--env", "1BAD=x"), "is not a variable name"),
        (("run", "-c", "1", "--env", "NOEQUALS"), "is not K=V"),
        (("run", "missing.py"), "does not exist"),
        (("run",), "give FILE or -c CODE"),
        (("run", "-c", "1", "-"), "give FILE or -c CODE"),
        (("run", "-c", "1", "--timeout", "0"), "--timeout"),
        (("sh",), "Missing argument"),
        (("files", "put", "missing.bin"), "does not exist"),
        (("no-such-command",), "No such command"),
    ],
)
def test_bad_input_exits_2_and_starts_nothing(
    cli: Cli, gateway: Gateway, args: tuple[str, ...], says: str
) -> None:
    before = {k["id"] for k in gateway.kernels()}
    done = cli(*args)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr
    assert {k["id"] for k in gateway.kernels()} == before


@pytest.mark.parametrize(
    "args",
    [("run", "-c", "1"), ("sh", "--", "true"), ("sessions", "ls"), ("sessions", "start")],
)
def test_a_closed_port_exits_3_with_one_line(
    workdir: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    cli = Cli(workdir, base_env(tmp_path / "state", GATEWAY_HTTP=url))
    done = cli(*args, timeout=60)
    assert done.returncode == 3
    assert one_line(done.stderr) == (
        f"mini-sandbox: cannot reach the gateway at {url} ([Errno 111] Connection refused): "
        "is the stack up? (./test_env.sh)"
    )


def test_the_file_server_unreachable_exits_3(workdir: Path, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    env = base_env(tmp_path / "state", FILE_SERVER_URL=url, FILE_SERVER_TOKEN="t")
    done = Cli(workdir, env)("files", "ls")
    assert done.returncode == 3
    assert one_line(done.stderr).startswith(f"mini-sandbox: cannot reach the file server at {url}")


@pytest.mark.parametrize("token", [None, "wrong"])
def test_a_refused_token_exits_4(
    locked_gateway: Gateway, workdir: Path, tmp_path: Path, token: str | None
) -> None:
    env = base_env(tmp_path / "state", GATEWAY_HTTP=locked_gateway.http)
    if token:
        env["JUPYTER_GATEWAY_AUTH_TOKEN"] = token
    cli = Cli(workdir, env)
    what = "refused the token" if token else "wants a token"
    for args in (("run", "-c", "1"), ("sessions", "ls"), ("sessions", "start")):
        done = cli(*args)
        assert done.returncode == 4, done.stderr
        assert one_line(done.stderr) == (
            f"mini-sandbox: the gateway at {locked_gateway.http} {what}: "
            "set JUPYTER_GATEWAY_AUTH_TOKEN or --token (see .env)"
        )
    right = cli("--token", TOKEN, "run", "-c", "6 * 7")
    assert (right.returncode, right.stdout) == (0, "42\n")


def test_a_refused_file_server_token_exits_4(files_cli: Cli) -> None:
    done = files_cli("files", "ls", env={"FILE_SERVER_TOKEN": "wrong"})
    assert done.returncode == 4
    assert one_line(done.stderr).endswith(
        "refused the token: set FILE_SERVER_TOKEN or --file-server-token (see .env)"
    )


def test_a_missing_file_server_token_is_a_usage_error(cli: Cli) -> None:
    done = cli("files", "ls")
    assert done.returncode == 2
    assert one_line(done.stderr) == (
        "mini-sandbox: no file server token: "
        "set FILE_SERVER_TOKEN or --file-server-token (see .env)"
    )
