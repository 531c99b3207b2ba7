"""run_command on both faces against a real Enterprise Gateway with real kernels."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_kernel_client import (
    AsyncGatewayKernelSession,
    CommandError,
    CommandResult,
    CommandTimeoutError,
    GatewayConfig,
    GatewayKernelSession,
)
from testkit.gateway import Gateway

MIB = 1024 * 1024

# What the kernel sees of its own processes whose command line holds a marker.
PROCESSES_WITH = """
import os
def _with(marker):
    found = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found
"""


@pytest.fixture
def session(gateway: Gateway) -> Iterator[GatewayKernelSession]:
    with GatewayKernelSession(gateway.http, gateway.ws, "python3") as s:
        s.execute(PROCESSES_WITH)
        yield s


def processes_with(session: GatewayKernelSession, marker: str) -> list[int]:
    found: list[int] = json.loads(session.execute(f"print(_with({marker!r}))").stdout)
    return found


def marker() -> str:
    """A sleep duration no other process on the machine uses (its argv finds it)."""
    return f"300.{uuid.uuid4().int % 10**9:09d}"


def test_exit_codes(session: GatewayKernelSession) -> None:
    assert session.run_command("true").exit_code == 0
    assert session.run_command("exit 3").exit_code == 3
    assert session.run_command(["false"]).exit_code == 1
    assert session.run_command(["sh", "-c", "exit 42"]).exit_code == 42
    killed = session.run_command("kill -TERM $$")
    assert killed.exit_code == -15 and not killed.ok


def test_stdout_and_stderr_are_kept_apart(session: GatewayKernelSession) -> None:
    result = session.run_command("echo out; echo err >&2; echo out2; printf 'no newline' >&2")
    assert isinstance(result, CommandResult)
    assert result.stdout == "out\nout2\n"
    assert result.stderr == "err\nno newline"
    assert result.ok and not result.truncated and result.duration > 0


def test_a_list_is_not_run_by_a_shell(session: GatewayKernelSession) -> None:
    result = session.run_command(["echo", "$HOME", "*", "a;b", "`id`"])
    assert result.stdout == "$HOME * a;b `id`\n"
    assert session.run_command("echo $((6 * 7))").stdout == "42\n"


def test_output_streams_while_the_command_runs(session: GatewayKernelSession) -> None:
    seen: list[tuple[float, str, str]] = []
    result = session.run_command(
        "echo first; echo warn >&2; sleep 2; echo second",
        on_output=lambda stream, text: seen.append((time.monotonic(), stream, text)),
    )
    ended = time.monotonic()
    assert "".join(t for _, s, t in seen if s == "stdout") == result.stdout == "first\nsecond\n"
    assert "".join(t for _, s, t in seen if s == "stderr") == result.stderr == "warn\n"
    first_at = next(at for at, _, text in seen if "first" in text)
    assert ended - first_at > 1.5  # it came before the sleep, not with the end


def test_the_kernel_state_is_untouched(session: GatewayKernelSession) -> None:
    before = session.execute("x = 41\nx + 1")
    session.run_command("echo hello")
    after = session.execute("_")
    assert str(after) == "42"  # the last result is still the user's
    assert after.execution_count == (before.execution_count or 0) + 1  # silent: no count
    assert str(session.execute("x")) == "41"
    assert "_run" not in str(session.execute("sorted(globals())"))


def test_a_timeout_kills_the_whole_process_tree(session: GatewayKernelSession) -> None:
    mark = marker()
    session.execute("y = 'kept'")
    with pytest.raises(CommandTimeoutError) as caught:
        session.run_command(f"sleep {mark} & sh -c 'sleep {mark}' & echo started; wait", timeout=2)
    assert caught.value.result is not None
    assert caught.value.result.stdout == "started\n"
    assert caught.value.result.exit_code == -9
    assert processes_with(session, mark) == []
    assert str(session.execute("y")) == "'kept'"
    assert session.run_command("echo after").stdout == "after\n"


def test_what_the_command_leaves_running_is_killed_when_it_exits(
    session: GatewayKernelSession,
) -> None:
    mark = marker()
    started = time.monotonic()
    result = session.run_command(f"sleep {mark} & echo bye", timeout=60)
    assert result.exit_code == 0 and result.stdout == "bye\n"
    assert time.monotonic() - started < 30  # not held until the timeout by the background pipe
    assert processes_with(session, mark) == []


def test_hostile_env_and_cwd_values_are_data(session: GatewayKernelSession, tmp_path: Path) -> None:
    # The integration kernels are local processes, so the host's tmp_path is theirs too.
    pwned = tmp_path / "pwned"
    hostile = {
        "A": f"$(touch {pwned})",
        "B": f"`touch {pwned}`",
        "C": f"; touch {pwned}; '\"",
        "D": "\n" + f"touch {pwned}",
    }
    shown = session.run_command('printf "%s|%s|%s|%s" "$A" "$B" "$C" "$D"', env=hostile)
    assert shown.stdout == "|".join(hostile.values())
    listed = session.run_command(["printenv", "C"], env=hostile)
    assert listed.stdout == hostile["C"] + "\n"
    odd = tmp_path / "a'; touch pwned; '$(touch pwned)`touch pwned`"
    odd.mkdir()
    assert session.run_command("pwd", cwd=str(odd)).stdout == f"{odd}\n"
    assert session.run_command(["pwd"], cwd=str(odd)).stdout == f"{odd}\n"
    assert session.run_command("ls -A", cwd=str(odd)).stdout == ""
    assert not pwned.exists()
    assert session.run_command("ls pwned").exit_code != 0  # nor in the kernel's own directory


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"env": {"A=B": "x"}}, ValueError),
        ({"env": {"1X": "x"}}, ValueError),
        ({"env": {"": "x"}}, ValueError),
        ({"env": {"X": 1}}, TypeError),
        ({"env": {"X": "a\x00b"}}, ValueError),
        ({"env": ["X=1"]}, TypeError),
        ({"cwd": ""}, ValueError),
        ({"cwd": 5}, TypeError),
        ({"timeout": 0}, ValueError),
        ({"timeout": -1}, ValueError),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(
    session: GatewayKernelSession, kwargs: dict[str, object], error: type[Exception]
) -> None:
    mark = marker()
    with pytest.raises(error):
        session.run_command(f"sleep {mark}", **kwargs)  # type: ignore[arg-type]
    assert processes_with(session, mark) == []


@pytest.mark.parametrize("cmd", ["", "   ", [], ["echo", 1], b"echo", ["a\x00b"]])
def test_bad_commands_are_refused(session: GatewayKernelSession, cmd: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        session.run_command(cmd)  # type: ignore[arg-type]


def test_a_command_that_cannot_start_says_why(session: GatewayKernelSession) -> None:
    with pytest.raises(CommandError, match=r"No such file or directory.*/no/such/dir"):
        session.run_command("true", cwd="/no/such/dir")
    with pytest.raises(CommandError, match="no-such-program"):
        session.run_command(["no-such-program-here"])
    # Through a shell, it is the shell's answer, as in a terminal.
    missing = session.run_command("no-such-program-here")
    assert missing.exit_code == 127 and "not found" in missing.stderr
    assert str(session.execute("1 + 1")) == "2"


def test_the_command_runs_with_the_kernel_s_environment_and_additions(
    session: GatewayKernelSession,
) -> None:
    session.execute("import os; os.environ['FROM_KERNEL'] = 'k'")
    result = session.run_command('echo "$FROM_KERNEL $ADDED"', env={"ADDED": "a"})
    assert result.stdout == "k a\n"
    assert session.run_command('echo "[$ADDED]"').stdout == "[]\n"  # not kept


def test_a_command_reads_no_stdin(session: GatewayKernelSession) -> None:
    assert session.run_command("cat", timeout=10).stdout == ""


def test_invalid_utf8_is_replaced_not_fatal(session: GatewayKernelSession) -> None:
    result = session.run_command("printf 'a\\377b'")
    assert result.stdout == "a\ufffdb"


def test_nothing_a_command_prints_can_pose_as_its_result(session: GatewayKernelSession) -> None:
    fake = json.dumps({"nonce": "x", "exit_code": 0})
    result = session.run_command(f"echo '{fake}'; exit 5")
    assert result.exit_code == 5


WORKER = textwrap.dedent(
    """
    import asyncio, json, resource, sys
    from jupyter_kernel_client import AsyncGatewayKernelSession, GatewayConfig, GatewayKernelSession

    http, ws, face, cmd = sys.argv[1:5]
    config = GatewayConfig(http, ws)
    streamed = 0

    def count(stream, text):
        global streamed
        streamed += len(text)

    def hwm():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def report(before, result):
        return {"growth": hwm() - before, "streamed": streamed, "exit_code": result.exit_code,
                "truncated": result.truncated, "kept": len(result.stdout) + len(result.stderr)}

    def run_sync():
        with GatewayKernelSession(config) as session:
            session.run_command("true")
            before = hwm()
            out = report(before, session.run_command(cmd, timeout=600, on_output=count))
            out["after"] = session.run_command("echo ok").stdout
            return out

    async def run_async():
        async with AsyncGatewayKernelSession(config) as session:
            await session.run_command("true")
            before = hwm()
            out = report(before, await session.run_command(cmd, timeout=600, on_output=count))
            out["after"] = (await session.run_command("echo ok")).stdout
            return out

    print("@@" + json.dumps(run_sync() if face == "sync" else asyncio.run(run_async())))
    """
)


@pytest.mark.parametrize("face", ["sync", "async"])
def test_300_mb_of_command_output_is_truncated_within_bounded_memory(
    gateway: Gateway, face: str
) -> None:
    cmd = "head -c 300000000 /dev/zero | tr '\\0' x"
    done = subprocess.run(
        [sys.executable, "-c", WORKER, gateway.http, gateway.ws, face, cmd],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("@@")]
    report = json.loads(line[2:])
    assert report["exit_code"] == 0
    assert report["truncated"] is True
    assert report["kept"] == report["streamed"] == 64 * MIB  # the default max_output_bytes
    assert report["growth"] < 200 * MIB, report
    assert report["after"] == "ok\n"


def test_a_small_output_limit_applies_to_commands(gateway: Gateway) -> None:
    config = GatewayConfig(gateway.http, gateway.ws, max_output_bytes=1000)
    with GatewayKernelSession(config) as session:
        result = session.run_command("seq 1 100000; echo tail >&2")
        assert result.truncated and result.exit_code == 0
        assert len(result.stdout) + len(result.stderr) == 1000
        assert result.stdout.startswith("1\n2\n3\n")


async def test_the_async_face(gateway: Gateway) -> None:
    config = GatewayConfig(gateway.http, gateway.ws)
    async with AsyncGatewayKernelSession(config) as session:
        seen: list[tuple[str, str]] = []
        result = await session.run_command(
            ["sh", "-c", "echo a; echo b >&2; exit 7"],
            on_output=lambda stream, text: seen.append((stream, text)),
        )
        assert (result.exit_code, result.stdout, result.stderr) == (7, "a\n", "b\n")
        assert sorted(seen) == [("stderr", "b\n"), ("stdout", "a\n")]
        with pytest.raises(CommandTimeoutError):
            await session.run_command("sleep 30", timeout=1)
        assert (await session.run_command("echo still")).stdout == "still\n"
        # Two commands at once on one session run one after the other (the session's lock).
        both = await asyncio.gather(
            session.run_command("sleep 0.5; echo 1"), session.run_command("echo 2")
        )
        assert [r.stdout for r in both] == ["1\n", "2\n"]
