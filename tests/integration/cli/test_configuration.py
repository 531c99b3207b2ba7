"""Where settings come from: a flag beats the environment, which beats the stack's .env (the
first found from the current directory upwards), which beats the defaults."""

from __future__ import annotations

from pathlib import Path

from testkit.gateway import Gateway, free_port
from tests.integration.cli.cli_harness import Cli, base_env
from tests.integration.fileserver.fileserver_harness import FileServer


def test_gateway_url_flag_then_environment_then_dotenv(
    gateway: Gateway, workdir: Path, tmp_path: Path
) -> None:
    port = gateway.http.rsplit(":", 1)[1]
    (workdir / ".env").write_text(
        f"# the stack's settings\nSANDBOX_BIND_ADDRESS=127.0.0.1\nGATEWAY_PORT='{port}'\n"
    )
    nested = workdir / "a" / "b"
    nested.mkdir(parents=True)
    closed = f"http://127.0.0.1:{free_port()}"
    state = tmp_path / "state"

    from_dotenv = Cli(nested, base_env(state))("run", "-c", "6 * 7")
    assert (from_dotenv.returncode, from_dotenv.stdout) == (0, "42\n"), from_dotenv.stderr

    env_wins = Cli(nested, base_env(state, GATEWAY_HTTP=closed))("run", "-c", "1")
    assert env_wins.returncode == 3 and closed in env_wins.stderr

    flag_wins = Cli(nested, base_env(state, GATEWAY_HTTP=closed))(
        "--gateway", gateway.http, "run", "-c", "6 * 7"
    )
    assert (flag_wins.returncode, flag_wins.stdout) == (0, "42\n"), flag_wins.stderr

    elsewhere = tmp_path / "other.env"
    elsewhere.write_text(f"GATEWAY_HTTP={closed}\n")
    chosen = Cli(nested, base_env(state))("--env-file", str(elsewhere), "run", "-c", "1")
    assert chosen.returncode == 3 and closed in chosen.stderr


def test_file_server_token_flag_then_environment_then_dotenv(
    file_server: FileServer, workdir: Path, tmp_path: Path
) -> None:
    (workdir / ".env").write_text(
        f'FILE_SERVER_TOKEN="{file_server.token}"  # from test_env.sh\n'
        f"FILE_SERVER_PORT={file_server.port}\n"
    )
    state = tmp_path / "state"
    assert Cli(workdir, base_env(state))("files", "ls").returncode == 0
    wrong = Cli(workdir, base_env(state, FILE_SERVER_TOKEN="wrong"))
    refused = wrong("files", "ls")
    assert refused.returncode == 4
    assert f"(see {workdir / '.env'})" in refused.stderr
    assert wrong("--file-server-token", file_server.token, "files", "ls").returncode == 0
