"""Exit codes, and the one line on stderr that each failure gets instead of a traceback.

The client's exception tree (``jupyter_kernel_client._exceptions``) maps onto the codes here
and nowhere else; :func:`reporting` converts at the boundary of each command.
"""

from __future__ import annotations

import contextlib
import enum
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import click

from .._exceptions import (
    AuthenticationError,
    CommandTimeoutError,
    ExecutionTimeoutError,
    FileServerAuthError,
    FileServerError,
    GatewayError,
    GatewayRefusedError,
    KernelClientError,
    StartupTimeoutError,
    TransportError,
)


class Exit(enum.IntEnum):
    OK = 0
    CODE = 1
    """The code raised, or the command exited non-zero (``sh`` passes its own code on)."""
    USAGE = 2
    CONNECT = 3
    REFUSED = 4
    TIMEOUT = 124
    INTERRUPTED = 130


EPILOG = """\b
Exit codes:
  0    ok
  1    the code raised (run), the command failed (sh: its own exit code)
  2    usage: bad option or argument, missing file or setting; nothing was started
  3    cannot connect: a service is down or unreachable, a kernel did not start
  4    refused: wrong token, kernel limit, unknown kernel or session, file refused
  124  timeout (--timeout)
  130  interrupted (Ctrl-C)
  sh exits with the command's own code; 128 + N when signal N killed it.
  See docs/cli.md.
"""

HINT_UP = "is the stack up? (./test_env.sh)"
# The operating system's reason inside a requests/urllib3 error, e.g. "[Errno 111] Connection
# refused": the rest of such a message is noise on a command line.
_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")\]]+")


@dataclass(frozen=True)
class Service:
    """What a message needs to say about the service a command talks to."""

    name: str
    """``gateway``, ``file server`` or ``notebook``."""
    url: str
    token_given: bool
    token_hint: str
    """How to set the token, e.g. ``set JUPYTER_GATEWAY_AUTH_TOKEN or --token (see .env)``."""


class CliError(click.ClickException):
    """A failure reported as ``mini-sandbox: <message>`` with its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"mini-sandbox: {self.format_message()}", err=True)


def usage(message: str) -> CliError:
    return CliError(message, Exit.USAGE)


def exit_code_for(exc: BaseException) -> int:
    """The exit code of a client error (the table in ``EPILOG``)."""
    if isinstance(exc, (ExecutionTimeoutError, CommandTimeoutError)):
        return Exit.TIMEOUT
    if isinstance(exc, (TransportError, StartupTimeoutError)):
        return Exit.CONNECT
    if isinstance(exc, (GatewayRefusedError, FileServerError)):
        return Exit.REFUSED
    if isinstance(exc, GatewayError):
        return Exit.CONNECT  # a 5xx after retries: the gateway is there but cannot serve
    return Exit.CODE


def message_for(exc: KernelClientError, service: Service) -> str:
    """One line saying what went wrong and, where there is one, what to do."""
    text = _one_line(str(exc))
    if isinstance(exc, TransportError):
        cause = _ERRNO.search(text)
        why = f" ({cause.group(0).rstrip('.')})" if cause else ""
        return f"cannot reach the {service.name} at {service.url}{why}: {HINT_UP}"
    if isinstance(exc, (AuthenticationError, FileServerAuthError)):
        status = getattr(exc, "status_code", None)
        if isinstance(exc, FileServerAuthError) and status == 403:
            return f"the {service.name} refused: {text}"
        what = "refused the token" if service.token_given else "wants a token"
        return f"the {service.name} at {service.url} {what}: {service.token_hint}"
    if isinstance(exc, StartupTimeoutError):
        return f"the kernel did not start: {text}"
    return text


def _one_line(text: str) -> str:
    return " ".join(text.split())


@contextlib.contextmanager
def reporting(service: Service) -> Iterator[None]:
    """Turn the client's errors into :class:`CliError` (one line, the mapped exit code)."""
    try:
        yield
    except KernelClientError as exc:
        raise CliError(message_for(exc, service), exit_code_for(exc)) from exc
