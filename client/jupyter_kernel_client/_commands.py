"""Shell commands in a session, run by code inside the kernel (I/O-free, like ``_fileops``).

The command runs in the kernel's container, under its limits, as a child of the kernel in a
process group of its own.  The kernel-side code forwards the child's stdout and stderr as the
kernel's own two streams while they arrive, and ends with one display message of
:data:`RESULT_MIME` carrying the exit code and a nonce that only this request knows, so that
nothing the command prints can pose as its result.

Every value (the command, ``cwd``, ``env``) reaches the kernel as a JSON document inside a
Python string literal made by ``repr``: data, never code.  A string command is run by
``/bin/sh -c``; a list is run as it is, without a shell.  The code executes in a namespace of
its own (``exec`` with fresh globals), silently (no execution count, no history), so the
user's variables, ``_`` and ``Out`` are as they were.

When the command's first process exits, or its time is up, or the kernel is interrupted, the
whole process group is killed: nothing the command started outlives it.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ._exceptions import CommandError
from ._result import ExecutionResult, OutputEvent

RESULT_MIME: Final = "application/vnd.mini-sandbox.command-result+json"
GRACE: Final = 10.0
"""Seconds the client waits beyond a command's timeout for the kernel to report it killed."""

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class CommandResult:
    """What one ``run_command`` produced."""

    exit_code: int
    """The command's exit status; ``-N`` when signal ``N`` killed it (as :mod:`subprocess`)."""
    stdout: str
    stderr: str
    duration: float
    """Seconds from sending the request to the kernel reporting the command's end."""
    truncated: bool = False
    """Whether output past the session's ``max_output_bytes`` was dropped (in the kernel: it is
    never sent).  A streaming callback saw what was sent."""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def __str__(self) -> str:
        return self.stdout + self.stderr


@dataclass(frozen=True)
class CommandRequest:
    """A validated command, and the code that runs it in the kernel."""

    code: str
    nonce: str
    timeout: float


def command_request(
    cmd: str | Sequence[str],
    *,
    timeout: float,
    cwd: str | None,
    env: Mapping[str, str] | None,
    budget: int,
) -> CommandRequest:
    """Validate everything, then build the kernel-side code.  Bad input raises here: nothing is
    sent."""
    if isinstance(cmd, str):
        if not cmd.strip():
            raise ValueError("the command is empty")
        argv, shell = [cmd], True
    elif isinstance(cmd, Sequence) and not isinstance(cmd, (bytes, bytearray)):
        argv, shell = list(cmd), False
        if not argv:
            raise ValueError("the command is an empty list")
        for arg in argv:
            if not isinstance(arg, str):
                raise TypeError(f"command arguments must be strings, not {type(arg).__name__}")
    else:
        raise TypeError(f"cmd must be a string or a list of strings, not {type(cmd).__name__}")
    for arg in argv:
        if "\x00" in arg:
            raise ValueError("a command argument may not contain NUL")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if cwd is not None:
        if not isinstance(cwd, str):
            raise TypeError(f"cwd must be a string, not {type(cwd).__name__}")
        if not cwd or "\x00" in cwd:
            raise ValueError(f"cwd must be a non-empty path without NUL, got {cwd!r}")
    variables = _checked_env(env)
    nonce = uuid.uuid4().hex
    spec = {
        "argv": argv,
        "shell": shell,
        "cwd": cwd,
        "env": variables,
        "timeout": float(timeout),
        "budget": max(int(budget), 0),
        "nonce": nonce,
        "mime": RESULT_MIME,
    }
    namespace = f"{{'__name__': '__mini_sandbox_command__', 'SPEC': {json.dumps(spec)!r}}}"
    code = f"exec({_KERNEL_CODE!r}, {namespace})\n"
    return CommandRequest(code, nonce, float(timeout))


def _checked_env(env: Mapping[str, str] | None) -> dict[str, str]:
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise TypeError(f"env must be a mapping of strings, not {type(env).__name__}")
    checked: dict[str, str] = {}
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise ValueError(f"env names must match [A-Za-z_][A-Za-z0-9_]*, got {name!r}")
        if not isinstance(value, str):
            raise TypeError(f"env[{name!r}] must be a string, not {type(value).__name__}")
        if "\x00" in value:
            raise ValueError(f"env[{name!r}] may not contain NUL")
        checked[name] = value
    return checked


def report_of(event: OutputEvent, nonce: str) -> dict[str, Any] | None:
    """The kernel's report on the command, if ``event`` is this request's."""
    if event.kind != "display":
        return None
    report = event.data.get(RESULT_MIME)
    if isinstance(report, dict) and report.get("nonce") == nonce:
        return report
    return None


def command_result(
    result: ExecutionResult, report: dict[str, Any] | None, *, what: str
) -> tuple[CommandResult, bool]:
    """The :class:`CommandResult`, and whether the command ran out of time; or
    :class:`CommandError` when it could not be run."""
    if report is not None and report.get("error"):
        raise CommandError(f"cannot run {what}: {report['error']}")
    if report is None or not isinstance(report.get("exit_code"), int):
        error = result.error
        detail = f"{error.ename}: {error.evalue}" if error else f"execution {result.status}"
        raise CommandError(f"{what} did not report its end: {detail}")
    outcome = CommandResult(
        exit_code=int(report["exit_code"]),
        stdout=result.stdout,
        stderr=result.stderr,
        duration=result.duration,
        truncated=bool(report.get("truncated")) or result.truncated,
    )
    return outcome, bool(report.get("timed_out"))


def describe(cmd: str | Sequence[str]) -> str:
    """The command as an error message names it."""
    text = cmd if isinstance(cmd, str) else " ".join(cmd)
    return repr(text if len(text) <= 80 else text[:77] + "...")


# Runs in the kernel, with SPEC (a JSON text) in its globals.  Only the standard library and
# IPython, which every ipykernel has.
_KERNEL_CODE: Final = r"""
import codecs, json, os, selectors, signal, subprocess, sys, time
from IPython.display import publish_display_data


def _report(spec, **report):
    publish_display_data({spec["mime"]: {"nonce": spec["nonce"], **report}})


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _run(spec):
    argv = ["/bin/sh", "-c", spec["argv"][0]] if spec["shell"] else spec["argv"]
    env = dict(os.environ)
    env.update(spec["env"])
    try:
        proc = subprocess.Popen(
            argv, cwd=spec["cwd"], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )
    except OSError as exc:
        _report(spec, error=f"{type(exc).__name__}: {exc}")
        return
    deadline = time.monotonic() + spec["timeout"]
    budget, sent, truncated, timed_out = spec["budget"], 0, False, False
    streams = {
        proc.stdout: (sys.stdout, codecs.getincrementaldecoder("utf-8")("replace")),
        proc.stderr: (sys.stderr, codecs.getincrementaldecoder("utf-8")("replace")),
    }
    selector = selectors.DefaultSelector()
    for pipe in streams:
        os.set_blocking(pipe.fileno(), False)
        selector.register(pipe, selectors.EVENT_READ)

    def forward(pipe, data):
        nonlocal sent, truncated
        if sent >= budget:
            truncated = truncated or bool(data)  # read on and drop: the command never blocks
            return
        out, decoder = streams[pipe]
        text = decoder.decode(data, final=not data)
        if not text:
            return
        part = text[: budget - sent]
        truncated = truncated or len(part) < len(text)
        sent += len(part)
        out.write(part)
        out.flush()

    def read(pipe):
        try:
            data = os.read(pipe.fileno(), 1 << 20)
        except BlockingIOError:
            return
        forward(pipe, data)
        if not data:
            selector.unregister(pipe)

    interrupted, exited_at = False, None
    try:
        # Until both pipes close, or time is up.  Once the first process has exited, what is
        # in the pipes is read, for half a second at most: anything it left running and holding
        # them is killed with its group below.
        while selector.get_map():
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                break
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            ready = selector.select(0 if exited_at is not None else min(deadline - now, 0.1))
            for key, _ in ready:
                read(key.fileobj)
            if exited_at is not None and (not ready or now - exited_at > 0.5):
                break
        if not timed_out:
            try:
                proc.wait(max(deadline - time.monotonic(), 0))
            except subprocess.TimeoutExpired:
                timed_out = True
    except KeyboardInterrupt:
        interrupted = True  # the session's interrupt(), or the client's own timeout
    finally:
        _kill_group(proc)
        code = proc.wait()
        selector.close()
        for pipe in streams:
            pipe.close()
        sys.stdout.flush()
        sys.stderr.flush()
    _report(spec, exit_code=code, timed_out=timed_out, truncated=truncated,
            interrupted=interrupted)


_run(json.loads(SPEC))
"""
