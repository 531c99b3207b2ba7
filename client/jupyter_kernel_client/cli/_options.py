"""Options that several commands share, and the checks of their values (exit 2 on bad input,
before anything is started)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

import click

from ._config import parse_assignments
from ._errors import usage

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_TIMEOUT: Final = 600.0


def env_option(command: F) -> F:
    return click.option(
        "--env",
        "env",
        multiple=True,
        metavar="K=V",
        help="Set an environment variable in the kernel (repeatable).",
    )(command)


def timeout_option(what: str, default: float = DEFAULT_TIMEOUT) -> Callable[[F], F]:
    return click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=default,
        show_default=True,
        metavar="S",
        help=f"Seconds before {what} is stopped (exit 124).",
    )


def kernel_option(command: F) -> F:
    return click.option(
        "--kernel",
        "kernel_name",
        default="python3",
        show_default=True,
        metavar="NAME",
        help="Kernelspec to start.",
    )(command)


def assignments(pairs: tuple[str, ...]) -> dict[str, str]:
    """The ``--env`` values, or a usage error."""
    try:
        return parse_assignments(pairs)
    except ValueError as exc:
        raise usage(f"--env: {exc}") from exc
