"""The I/O-free half of run_command: what is sent to the kernel, and how its report is read."""

from __future__ import annotations

import ast

import pytest

from jupyter_kernel_client import CommandError, ExecutionResult, KernelErrorInfo, OutputEvent
from jupyter_kernel_client._commands import (
    RESULT_MIME,
    command_request,
    command_result,
    report_of,
)

HOSTILE = "'); import os; os.system('id'); ('\"\"\"\\"


@pytest.mark.parametrize(
    "cmd", [HOSTILE, [HOSTILE, "--x"], "echo $(id) `id` ${HOME}", ["a b", "c\nd"]]
)
def test_every_value_reaches_the_kernel_as_a_literal(cmd: str | list[str]) -> None:
    request = command_request(
        cmd, timeout=5, cwd=HOSTILE, env={"X": HOSTILE, "Y_1": "\n"}, budget=10
    )
    tree = ast.parse(request.code)
    (statement,) = tree.body
    assert isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call)
    call = statement.value
    assert isinstance(call.func, ast.Name) and call.func.id == "exec"
    source, namespace = call.args
    assert isinstance(source, ast.Constant) and isinstance(namespace, ast.Dict)
    # Nothing but constants: no expression built from the caller's values.
    assert all(isinstance(node, ast.Constant) for node in [*namespace.keys, *namespace.values])


def test_each_request_has_its_own_nonce() -> None:
    first = command_request("true", timeout=1, cwd=None, env=None, budget=0)
    second = command_request("true", timeout=1, cwd=None, env=None, budget=0)
    assert first.nonce != second.nonce and first.nonce in first.code


def report_event(**report: object) -> OutputEvent:
    return OutputEvent("display", data={RESULT_MIME: report})


def test_only_the_request_s_own_report_counts() -> None:
    assert report_of(report_event(nonce="n", exit_code=0), "n") == {"nonce": "n", "exit_code": 0}
    assert report_of(report_event(nonce="other", exit_code=0), "n") is None
    assert report_of(OutputEvent("stdout", text=RESULT_MIME), "n") is None
    assert report_of(OutputEvent("display", data={RESULT_MIME: "n"}), "n") is None


def result(*outputs: OutputEvent, status: str = "ok") -> ExecutionResult:
    return ExecutionResult(status=status, outputs=list(outputs), execution_count=None, duration=1)


def test_the_result_keeps_the_streams_apart() -> None:
    executed = result(OutputEvent("stdout", text="o"), OutputEvent("stderr", text="e"))
    outcome, timed_out = command_result(
        executed, {"exit_code": 2, "truncated": True, "timed_out": False}, what="'x'"
    )
    assert (outcome.exit_code, outcome.stdout, outcome.stderr) == (2, "o", "e")
    assert outcome.truncated and not outcome.ok and not timed_out


def test_a_command_that_could_not_start_raises() -> None:
    with pytest.raises(CommandError, match="cannot run 'x': FileNotFoundError"):
        command_result(result(), {"error": "FileNotFoundError: nope"}, what="'x'")


def test_no_report_raises_with_the_kernel_s_error() -> None:
    error = OutputEvent("error", error=KernelErrorInfo("KeyboardInterrupt", "", []))
    with pytest.raises(CommandError, match="did not report its end: KeyboardInterrupt"):
        command_result(result(error, status="error"), None, what="'x'")
