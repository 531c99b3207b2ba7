"""``mini-sandbox run`` against real kernels: live streams, values, images, --env, exit codes."""

from __future__ import annotations

import base64
import signal
import time
from pathlib import Path

from testkit.gateway import Gateway
from tests.integration.cli.cli_harness import Cli, read_line

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def test_stdout_and_stderr_arrive_while_the_code_runs(cli: Cli) -> None:
    code = (
        "import sys, time\n"
        "print('first', flush=True)\n"
        "print('warning', file=sys.stderr, flush=True)\n"
        "time.sleep(3)\n"
        "print('last')\n"
    )
    with cli.popen("run", "-c", code) as proc:
        try:
            assert proc.stdout is not None and proc.stderr is not None
            assert read_line(proc.stdout, timeout=60) == "first\n"
            assert read_line(proc.stderr, timeout=5) == "warning\n"
            seen_at = time.monotonic()
            assert proc.poll() is None, "the output came only with the end"
            assert proc.wait(timeout=60) == 0
            assert time.monotonic() - seen_at > 2
            assert proc.stdout.read() == "last\n"
        finally:
            proc.kill()


def test_the_value_is_printed_and_the_kernel_is_shut_down(cli: Cli, gateway: Gateway) -> None:
    done = cli("run", "-c", "x = 6 * 7\nx")
    assert (done.returncode, done.stdout) == (0, "42\n")
    before = {k["id"] for k in gateway.kernels()}
    code = "import os; print(os.getpid())"
    first, second = cli("run", "-c", code), cli("run", "-c", code)
    assert first.stdout != second.stdout, "each run has a fresh kernel"
    # The shutdown runs on in a child of the command, which has returned: it ends soon after.
    deadline = time.monotonic() + 30
    while {k["id"] for k in gateway.kernels()} - before:
        assert time.monotonic() < deadline, "a kernel was left behind"
        time.sleep(0.2)


def test_a_file_and_stdin(cli: Cli, workdir: Path) -> None:
    (workdir / "script.py").write_text("import sys\nprint('from a file', len(sys.argv) >= 0)\n")
    assert cli("run", "script.py").stdout == "from a file True\n"
    piped = cli("run", "-", input="print('from stdin')\n")
    assert (piped.returncode, piped.stdout) == (0, "from stdin\n")


def test_a_kernel_error_exits_1_with_the_plain_traceback(cli: Cli) -> None:
    done = cli("run", "-c", "print('before')\ndef f():\n    1 / 0\nf()")
    assert done.returncode == 1
    assert done.stdout == "before\n"
    assert "ZeroDivisionError" in done.stderr and "division by zero" in done.stderr
    assert "\x1b[" not in done.stderr, "no colour codes"


def test_a_timeout_exits_124(cli: Cli) -> None:
    started = time.monotonic()
    done = cli(
        "run", "-c", "import time; print('started', flush=True); time.sleep(60)", "--timeout", "2"
    )
    assert done.returncode == 124, done.stderr
    assert done.stdout == "started\n"
    assert "did not finish within 2 s" in done.stderr
    assert time.monotonic() - started < 30


def test_env_values_reach_the_code_as_data(cli: Cli) -> None:
    hostile = "'); import os; os._exit(9) #\"\\n$HOME"
    done = cli(
        "run",
        "-c",
        "import os; print(repr(os.environ['HOSTILE'])); print(os.environ['EMPTY'] == '')",
        "--env",
        f"HOSTILE={hostile}",
        "--env",
        "EMPTY=",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{hostile!r}\nTrue\n"
    # Nothing of the mechanism is left in the user's namespace.
    names = "sorted(k for k in globals() if not k.startswith('_'))"
    plain, with_env = cli("run", "-c", names), cli("run", "-c", names, "--env", "A=1")
    assert plain.returncode == with_env.returncode == 0
    assert with_env.stdout == plain.stdout and "In" in plain.stdout


def test_images_are_saved_to_out(cli: Cli, workdir: Path) -> None:
    code = (
        "import base64\n"
        "from IPython.display import Image, display\n"
        f"png = base64.b64decode({base64.b64encode(PNG).decode()!r})\n"
        "display(Image(data=png))\n"
        "display(Image(data=png))\n"
        "print('done')\n"
    )
    done = cli("run", "-c", code, "--out", "plots")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done\n"
    saved = sorted((workdir / "plots").iterdir())
    assert [p.name for p in saved] == ["image-1.png", "image-2.png"]
    assert all(p.read_bytes() == PNG for p in saved)
    assert str(Path("plots") / "image-1.png") in done.stderr
    without = cli("run", "-c", code)
    assert without.returncode == 0 and "2 image(s) not saved: pass --out DIR" in without.stderr


def test_ctrl_c_exits_130_and_shuts_the_kernel_down(cli: Cli, gateway: Gateway) -> None:
    before = {k["id"] for k in gateway.kernels()}
    with cli.popen("run", "-c", "import time; print('go', flush=True); time.sleep(60)") as proc:
        try:
            assert proc.stdout is not None and proc.stderr is not None
            assert read_line(proc.stdout, timeout=60) == "go\n"
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 130
            assert "interrupted" in proc.stderr.read()
        finally:
            proc.kill()
    assert {k["id"] for k in gateway.kernels()} <= before, "waited for, not left behind"
