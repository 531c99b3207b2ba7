"""The command line's settings (flag > environment > .env > defaults), its .env parser, its
exit codes and the cost of importing it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from jupyter_kernel_client import (
    AuthenticationError,
    CommandError,
    CommandTimeoutError,
    ConnectionLostError,
    ExecutionTimeoutError,
    FileServerAuthError,
    FileServerError,
    GatewayError,
    GatewayRefusedError,
    KernelDiedError,
    KernelLimitError,
    RemoteFileNotFoundError,
    StartupTimeoutError,
    TransportError,
    UnknownKernelNameError,
)
from jupyter_kernel_client.cli import _config
from jupyter_kernel_client.cli._errors import Exit, Service, exit_code_for, message_for
from jupyter_kernel_client.cli._repl import history_path, is_complete
from jupyter_kernel_client.cli._run import environment_code
from jupyter_kernel_client.cli._sh import exit_status

CLI_PACKAGE = Path(__file__).resolve().parents[3] / "client" / "jupyter_kernel_client" / "cli"


def test_env_file_syntax() -> None:
    text = """
# a comment
export JUPYTER_GATEWAY_AUTH_TOKEN=abc
FILE_SERVER_TOKEN="q\\"uo ted # not a comment"
GATEWAY_PORT=9999 # a comment
SANDBOX_BIND_ADDRESS='0.0.0.0'
EMPTY=
  SPACED  =  value with spaces
not a line
1BAD=x
DOLLAR='$HOME literal'
NEWLINE="a\\nb"
"""
    assert _config.parse_env_file(text) == {
        "JUPYTER_GATEWAY_AUTH_TOKEN": "abc",
        "FILE_SERVER_TOKEN": 'q"uo ted # not a comment',
        "GATEWAY_PORT": "9999",
        "SANDBOX_BIND_ADDRESS": "0.0.0.0",
        "EMPTY": "",
        "SPACED": "value with spaces",
        "DOLLAR": "$HOME literal",
        "NEWLINE": "a\nb",
    }


def test_the_example_env_file_gives_the_readme_stack() -> None:
    example = (CLI_PACKAGE.parents[2] / ".env.example").read_text()
    settings = _config.resolve(_config.Flags(), {}, _config.parse_env_file(example))
    assert settings.gateway_http == "http://127.0.0.1:8889"
    assert settings.gateway_ws == "ws://127.0.0.1:8889"
    assert settings.file_server_url == "http://127.0.0.1:8080"
    assert settings.notebook_url == "http://127.0.0.1:8888"
    assert settings.token is None and settings.file_server_token is None  # empty is unset


def test_defaults_without_anything() -> None:
    settings = _config.resolve(_config.Flags(), {}, {})
    assert (settings.gateway_http, settings.gateway_ws) == (
        "http://127.0.0.1:8889",
        "ws://127.0.0.1:8889",
    )
    assert settings.file_server_url == "http://127.0.0.1:8080"
    assert settings.notebook_url == "http://127.0.0.1:8888"


def test_flag_beats_environment_beats_dotenv() -> None:
    dotenv = {
        "JUPYTER_GATEWAY_AUTH_TOKEN": "from-dotenv",
        "FILE_SERVER_TOKEN": "fs-dotenv",
        "GATEWAY_PORT": "7000",
        "SANDBOX_BIND_ADDRESS": "10.0.0.5",
        "NOTEBOOK_URL": "http://nb-dotenv:1",
    }
    environ = {"JUPYTER_GATEWAY_AUTH_TOKEN": "from-env", "GATEWAY_HTTP": "http://env:1"}
    only_dotenv = _config.resolve(_config.Flags(), {}, dotenv)
    assert only_dotenv.token == "from-dotenv"
    assert only_dotenv.gateway_http == "http://10.0.0.5:7000"
    assert only_dotenv.file_server_url == "http://10.0.0.5:8080"
    assert only_dotenv.notebook_url == "http://nb-dotenv:1"

    with_env = _config.resolve(_config.Flags(), environ, dotenv)
    assert (with_env.token, with_env.gateway_http) == ("from-env", "http://env:1")
    assert with_env.file_server_token == "fs-dotenv"

    flags = _config.Flags(gateway="https://flag:2/", token="from-flag", file_server_token="fs")
    with_flags = _config.resolve(flags, environ, dotenv)
    assert (with_flags.token, with_flags.gateway_http) == ("from-flag", "https://flag:2")
    assert with_flags.gateway_ws == "wss://flag:2"
    assert with_flags.file_server_token == "fs"


def test_the_environment_port_beats_the_dotenv_port() -> None:
    settings = _config.resolve(_config.Flags(), {"GATEWAY_PORT": "1"}, {"GATEWAY_PORT": "2"})
    assert settings.gateway_http == "http://127.0.0.1:1"


def test_the_websocket_url_follows_a_stronger_http_url() -> None:
    environ = {"GATEWAY_HTTP": "http://env:1", "GATEWAY_WS": "ws://env-ws:1"}
    assert _config.resolve(_config.Flags(), environ, {}).gateway_ws == "ws://env-ws:1"
    # --gateway alone never pairs with the environment's websocket URL.
    flagged = _config.resolve(_config.Flags(gateway="http://flag:3"), environ, {})
    assert flagged.gateway_ws == "ws://flag:3"
    both = _config.Flags(gateway="http://flag:3", gateway_ws="ws://other:4")
    assert _config.resolve(both, environ, {}).gateway_ws == "ws://other:4"


@pytest.mark.parametrize(
    ("bind", "host"),
    [("0.0.0.0", "127.0.0.1"), ("::", "[::1]"), ("::1", "[::1]"), ("192.0.2.1", "192.0.2.1")],
)
def test_a_bind_address_becomes_a_host_to_connect_to(bind: str, host: str) -> None:
    settings = _config.resolve(_config.Flags(), {}, {"SANDBOX_BIND_ADDRESS": bind})
    assert settings.gateway_http == f"http://{host}:8889"


def test_the_first_env_file_upwards(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("GATEWAY_PORT=1111\n")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert _config.find_env_file(deep) == tmp_path / ".env"
    (tmp_path / "a" / ".env").write_text("GATEWAY_PORT=2222\n")
    loaded = _config.load(_config.Flags(), {}, deep)
    assert loaded.gateway_http == "http://127.0.0.1:2222"
    assert loaded.env_file == tmp_path / "a" / ".env"
    chosen = _config.load(_config.Flags(), {}, deep, tmp_path / ".env")
    assert chosen.gateway_http == "http://127.0.0.1:1111"


def test_env_assignments() -> None:
    assert _config.parse_assignments(["A=1", "B=x=y", "C=", "_d9=é"]) == {
        "A": "1",
        "B": "x=y",
        "C": "",
        "_d9": "é",
    }
    for bad in ("NOEQUALS", "1A=x", "A-B=x", "=x", "A B=x", "A=\x00"):
        with pytest.raises(ValueError):
            _config.parse_assignments([bad])


def test_environment_code_carries_values_as_data() -> None:
    hostile = {"A": "'); import os; os._exit(1) #", "B": '"""\\', "C": "\n$(id)"}
    code = environment_code(hostile)
    tree = ast.parse(code)
    call = tree.body[0].value  # type: ignore[attr-defined]
    literal = call.args[0].args[0].value
    import json

    assert json.loads(literal) == hostile
    namespace: dict[str, object] = {}
    environ: dict[str, str] = {}

    class Os:
        pass

    Os.environ = environ  # type: ignore[attr-defined]
    fake_import = {"os": Os, "json": json}
    exec(code, {"__builtins__": {"__import__": fake_import.__getitem__}}, namespace)
    assert environ == hostile and namespace == {}


SERVICE = Service("gateway", "http://g", True, "set X or --x (see .env)")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (TransportError("refused"), Exit.CONNECT),
        (ConnectionLostError("dropped"), Exit.CONNECT),
        (StartupTimeoutError("slow"), Exit.CONNECT),
        (GatewayError("500", status_code=500), Exit.CONNECT),
        (AuthenticationError("401", status_code=401), Exit.REFUSED),
        (GatewayRefusedError("404", status_code=404), Exit.REFUSED),
        (UnknownKernelNameError("k", ["python3"], status_code=404), Exit.REFUSED),
        (KernelLimitError("full", status_code=403, scope="user"), Exit.REFUSED),
        (FileServerAuthError("401", status_code=401), Exit.REFUSED),
        (RemoteFileNotFoundError("404", status_code=404), Exit.REFUSED),
        (FileServerError("409", status_code=409), Exit.REFUSED),
        (ExecutionTimeoutError("late"), Exit.TIMEOUT),
        (CommandTimeoutError("late"), Exit.TIMEOUT),
        (KernelDiedError("dead"), Exit.CODE),
        (CommandError("no such file"), Exit.CODE),
    ],
)
def test_exit_codes_of_the_exception_tree(error: Exception, code: int) -> None:
    assert exit_code_for(error) == code
    message = message_for(error, SERVICE)  # type: ignore[arg-type]
    assert "\n" not in message and message


def test_messages_say_what_to_do() -> None:
    refused = TransportError(
        "POST http://g/api/kernels failed: HTTPConnectionPool(...): Max retries exceeded "
        "(Caused by NewConnectionError('...: [Errno 111] Connection refused'))"
    )
    assert message_for(refused, SERVICE) == (
        "cannot reach the gateway at http://g ([Errno 111] Connection refused): "
        "is the stack up? (./test_env.sh)"
    )
    auth = AuthenticationError("401", status_code=401)
    assert (
        message_for(auth, SERVICE)
        == "the gateway at http://g refused the token: set X or --x (see .env)"
    )
    tokenless = Service("gateway", "http://g", False, "set X")
    assert message_for(auth, tokenless) == "the gateway at http://g wants a token: set X"


def test_signal_exit_codes_as_a_shell_reports_them() -> None:
    assert [exit_status(c) for c in (0, 1, 255, -9, -15)] == [0, 1, 255, 137, 143]


def test_completeness_as_python_s_repl_decides() -> None:
    assert is_complete("1 + 1")
    assert not is_complete("def f():")
    assert not is_complete("def f():\n    return 1")
    assert is_complete("def f():\n    return 1\n")
    assert not is_complete("while True: pass")
    assert not is_complete("x = (1,")
    assert is_complete("x = (1,\n2)")
    assert is_complete("1 +* 2"), "a syntax error is the kernel's to report"
    assert is_complete("%timeit 1"), "IPython syntax goes to the kernel"


def test_history_path(tmp_path: Path) -> None:
    assert history_path({"XDG_STATE_HOME": str(tmp_path)}) == tmp_path / "mini-sandbox" / "history"
    assert history_path({}) == Path.home() / ".local" / "state" / "mini-sandbox" / "history"


ALLOWED_AT_IMPORT = {
    "click",
    "jupyter_kernel_client.cli",
    "jupyter_kernel_client._config",
    "jupyter_kernel_client._exceptions",
}


def test_the_cli_modules_import_nothing_heavy_at_start_up() -> None:
    """Module-level imports are the standard library, click and two I/O-free client modules;
    sessions, requests and tqdm load inside the commands."""
    stdlib = sys.stdlib_module_names
    for module in CLI_PACKAGE.glob("*.py"):
        tree = ast.parse(module.read_text())
        for node in tree.body:
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level == 1 or node.module == "__future__":
                    continue  # the cli package's own modules, checked themselves
                base = "jupyter_kernel_client" if node.level == 2 else ""
                names = [f"{base}.{node.module}" if base else str(node.module)]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in stdlib or name in ALLOWED_AT_IMPORT, (
                    f"{module.name} imports {name} at start-up"
                )


def test_help_does_not_import_requests() -> None:
    probe = (
        "import sys, runpy; sys.argv = ['mini-sandbox', '--help']\n"
        "try:\n    runpy.run_module('jupyter_kernel_client.cli', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "assert 'requests' not in sys.modules, 'requests imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
