"""Where the command line's settings come from: flags, then the environment, then the stack's
``.env``, then the defaults of the README's stack.

Pure functions over mappings (no I/O but reading the ``.env`` file), so that the order is
tested without a process.  The ``.env`` is parsed here, never executed: ``KEY=VALUE`` lines,
``#`` comments, optional ``export``, single quotes (literal) or double quotes (``\\n``, ``\\"``,
``\\\\`` escapes).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .._config import TOKEN_ENV, ws_of

ENV_FILE: Final = ".env"
NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Each setting: the flag's name (click's parameter name), the variable read from the
# environment and from .env, and how its default is built.
GATEWAY_HTTP: Final = "GATEWAY_HTTP"
GATEWAY_WS: Final = "GATEWAY_WS"
FILE_SERVER_URL: Final = "FILE_SERVER_URL"
FILE_SERVER_TOKEN: Final = "FILE_SERVER_TOKEN"
NOTEBOOK_URL: Final = "NOTEBOOK_URL"
# The stack's own keys (.env.example), from which the default URLs are built.
BIND_ADDRESS: Final = "SANDBOX_BIND_ADDRESS"
GATEWAY_PORT: Final = "GATEWAY_PORT"
FILE_SERVER_PORT: Final = "FILE_SERVER_PORT"
NOTEBOOK_PORT: Final = "NOTEBOOK_PORT"
DEFAULT_PORTS: Final = {GATEWAY_PORT: "8889", FILE_SERVER_PORT: "8080", NOTEBOOK_PORT: "8888"}

FLAG = 0
ENVIRONMENT = 1
DOTENV = 2
DEFAULT = 3
ORIGINS: Final = ("flag", "environment", ".env", "default")


@dataclass(frozen=True)
class Settings:
    """The command line's connection settings, resolved once per invocation."""

    gateway_http: str
    gateway_ws: str
    token: str | None
    file_server_url: str
    file_server_token: str | None
    notebook_url: str
    env_file: Path | None = None
    """The ``.env`` that was read, if any (named in hints about missing tokens)."""


@dataclass(frozen=True)
class Flags:
    """The group's options as given on the command line (``None``: not given)."""

    gateway: str | None = None
    gateway_ws: str | None = None
    token: str | None = None
    file_server: str | None = None
    file_server_token: str | None = None
    notebook: str | None = None


def parse_env_file(text: str) -> dict[str, str]:
    """The ``KEY=VALUE`` assignments of a ``.env`` text; lines that are none are skipped."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, rest = line.partition("=")
        key = key.strip()
        if not sep or not NAME.fullmatch(key):
            continue
        values[key] = _value(rest.strip())
    return values


_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def _value(rest: str) -> str:
    if rest[:1] == "'":
        end = rest.find("'", 1)
        return rest[1:end] if end > 0 else rest[1:]
    if rest[:1] == '"':
        out: list[str] = []
        i = 1
        while i < len(rest) and rest[i] != '"':
            if rest[i] == "\\" and i + 1 < len(rest):
                out.append(_ESCAPES.get(rest[i + 1], "\\" + rest[i + 1]))
                i += 2
                continue
            out.append(rest[i])
            i += 1
        return "".join(out)
    # Unquoted: an inline comment starts at " #", as in docker compose.
    comment = re.search(r"\s#", rest)
    return (rest[: comment.start()] if comment else rest).strip()


def find_env_file(start: Path) -> Path | None:
    """The first ``.env`` in ``start`` or one of its parents."""
    for folder in (start, *start.parents):
        candidate = folder / ENV_FILE
        if candidate.is_file():
            return candidate
    return None


def resolve(
    flags: Flags,
    environ: Mapping[str, str],
    dotenv: Mapping[str, str],
    env_file: Path | None = None,
) -> Settings:
    """Each setting from the first source that has it: flag, environment, ``.env``, default.

    A value that is empty counts as not set.  The websocket URL is taken only from a source at
    least as strong as the one that gave the HTTP URL, else derived from it: ``--gateway``
    alone never pairs with a ``GATEWAY_WS`` of the environment.
    """

    def lookup(
        environ: Mapping[str, str], name: str, flag: str | None = None
    ) -> tuple[str | None, int]:
        for level, value in enumerate((flag, environ.get(name), dotenv.get(name))):
            if value:
                return value, level
        return None, DEFAULT

    def stack_url(environ: Mapping[str, str], port_key: str) -> str:
        host, _ = lookup(environ, BIND_ADDRESS)
        port, _ = lookup(environ, port_key)
        return f"http://{_connectable(host or '127.0.0.1')}:{port or DEFAULT_PORTS[port_key]}"

    http, http_level = lookup(environ, GATEWAY_HTTP, flags.gateway)
    ws, ws_level = lookup(environ, GATEWAY_WS, flags.gateway_ws)
    gateway_http = (http or stack_url(environ, GATEWAY_PORT)).rstrip("/")
    if ws is None or ws_level > http_level:
        ws = ws_of(gateway_http) if gateway_http.startswith(("http://", "https://")) else ""
    return Settings(
        gateway_http=gateway_http,
        gateway_ws=ws.rstrip("/"),
        token=lookup(environ, TOKEN_ENV, flags.token)[0],
        file_server_url=(
            lookup(environ, FILE_SERVER_URL, flags.file_server)[0]
            or stack_url(environ, FILE_SERVER_PORT)
        ).rstrip("/"),
        file_server_token=lookup(environ, FILE_SERVER_TOKEN, flags.file_server_token)[0],
        notebook_url=(
            lookup(environ, NOTEBOOK_URL, flags.notebook)[0] or stack_url(environ, NOTEBOOK_PORT)
        ).rstrip("/"),
        env_file=env_file,
    )


def _connectable(bind: str) -> str:
    """Where to connect for a published port bound to ``bind``."""
    if bind in ("0.0.0.0", "*"):
        return "127.0.0.1"
    if bind in ("::", "[::]"):
        return "[::1]"
    if ":" in bind and not bind.startswith("["):
        return f"[{bind}]"
    return bind


def load(
    flags: Flags, environ: Mapping[str, str], cwd: Path, env_file: Path | None = None
) -> Settings:
    """:func:`resolve` with the ``.env`` given, or the first found from ``cwd`` upwards."""
    path = env_file or find_env_file(cwd)
    dotenv = parse_env_file(path.read_text(encoding="utf-8", errors="replace")) if path else {}
    return resolve(flags, environ, dotenv, path)


def parse_assignments(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``K=V`` arguments of ``--env`` as a dict; a bad one raises ``ValueError``."""
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"{pair!r} is not K=V")
        if not NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a variable name: [A-Za-z_][A-Za-z0-9_]*")
        if "\x00" in value:
            raise ValueError(f"the value of {name} contains NUL")
        env[name] = value
    return env
