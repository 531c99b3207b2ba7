"""``mini-sandbox sh``: the command's exit code, its two streams apart and live, argv or shell."""

from __future__ import annotations

import time

from tests.integration.cli.cli_harness import Cli, read_line


def test_the_exit_code_and_the_streams_apart(cli: Cli) -> None:
    done = cli("sh", "--", "echo out; echo err >&2; echo out2; exit 3")
    assert done.returncode == 3
    assert done.stdout == "out\nout2\n"
    assert done.stderr == "err\n"
    assert cli("sh", "--", "true").returncode == 0


def test_killed_by_a_signal_is_128_plus_n(cli: Cli) -> None:
    assert cli("sh", "--", "kill -TERM $$").returncode == 128 + 15


def test_one_argument_is_a_shell_string_several_an_argv(cli: Cli) -> None:
    shell = cli("sh", "--", "echo $((6 * 7)) | tr 4 X")
    assert shell.stdout == "X2\n"
    argv = cli("sh", "--", "echo", "$HOME", "a;b", "`id`")
    assert argv.stdout == "$HOME a;b `id`\n"
    # Without `--` the command's own options are the command's, not ours.
    assert cli("sh", "ls", "-d", "/").stdout == "/\n"


def test_cwd_and_env(cli: Cli) -> None:
    done = cli("sh", "--cwd", "/", "--env", "GREETING=hi there", "--", 'pwd; echo "$GREETING"')
    assert (done.returncode, done.stdout) == (0, "/\nhi there\n")
    missing = cli("sh", "--cwd", "/no/such/dir", "--", "true")
    assert missing.returncode == 1 and "/no/such/dir" in missing.stderr
    assert cli("sh", "--env", "BAD-NAME=1", "--", "true").returncode == 2


def test_output_is_live_and_a_timeout_exits_124(cli: Cli) -> None:
    with cli.popen("sh", "--timeout", "3", "--", "echo first; sleep 30; echo never") as proc:
        try:
            assert proc.stdout is not None and proc.stderr is not None
            assert read_line(proc.stdout, timeout=60) == "first\n"
            assert proc.poll() is None
            started = time.monotonic()
            assert proc.wait(timeout=60) == 124
            assert time.monotonic() - started < 20
            assert proc.stdout.read() == ""
            assert "did not finish within 3 s" in proc.stderr.read()
        finally:
            proc.kill()


def test_in_a_running_session_which_stays(cli: Cli) -> None:
    kernel_id = cli("sessions", "start").stdout.strip()
    try:
        assert (
            cli("sh", "--session", kernel_id, "--", "echo x > /tmp/cli-sh-marker").returncode == 0
        )
        again = cli(
            "sh", "--session", kernel_id, "--", "cat /tmp/cli-sh-marker; rm /tmp/cli-sh-marker"
        )
        assert (again.returncode, again.stdout) == (0, "x\n")
        assert kernel_id in cli("sessions", "ls").stdout
    finally:
        assert cli("sessions", "stop", kernel_id).returncode == 0
