"""The command line and shell commands against the README's stack: one run, one markdown table.

Needs the stack up (``./test_env.sh``) with its warm pool, and the package with the ``cli``
extra.  Settings come from where ``mini-sandbox`` takes them (flags, environment, then the
``.env`` found from the current directory upwards), so run it from the clone.

Rows, interleaved round by round so that other load falls on each alike:

1. ``python -c pass``: the interpreter's start;
2. ``python -c "import jupyter_kernel_client"``: the floor of any Python client;
3. ``mini-sandbox --help``: the CLI's own start-up;
4. ``mini-sandbox run -c "print(1)"``: wall time from the shell, a fresh (warm-pool) session;
5. ``mini-sandbox sh -- true``: the same for a shell command;
6. ``execute("1+1")`` and ``run_command("true")`` round trips in one open session.

    python bench/bench_cli.py              # about a minute
    python bench/bench_cli.py --runs 30
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CLI_TARGET_S = 0.5
COMMAND_TARGET = 3.0  # run_command("true") p50, times execute("1+1") p50


def wall(argv: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return seconds


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def wait_for_pool(http: Any, url: str, deadline: float = 30.0) -> str:
    """Until the gateway's warm pool is full again (a CLI row took one of its kernels), so that
    every row measures a warm start; returns how it knew."""
    ends = time.monotonic() + deadline
    while time.monotonic() < ends:
        answer = http.get(f"{url}/api/sandbox/status", timeout=5)
        if answer.status_code == 404:
            time.sleep(3)  # an older gateway: no status route; 3 s refills a pool here
            return "waited 3 s (no /api/sandbox/status)"
        pool = answer.json()["pool"]
        if all(fill["ready"] >= fill["target"] for fill in pool.values()):
            return "pool full before each run (/api/sandbox/status)"
        time.sleep(0.05)
    raise SystemExit("the warm pool did not refill within 30 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=12, help="samples per row (default 12)")
    parser.add_argument("--round-trips", type=int, default=100, help="per round trip row")
    args = parser.parse_args()

    from jupyter_kernel_client import GatewayConfig, GatewayKernelSession
    from jupyter_kernel_client.cli._config import Flags, load

    settings = load(Flags(), os.environ, Path.cwd())
    config = GatewayConfig(settings.gateway_http, settings.gateway_ws, token=settings.token)
    # The venv's own script (a version manager's shim on PATH would add its own start-up).
    script = Path(sys.executable).with_name("mini-sandbox")
    cli = [str(script)] if script.exists() else [sys.executable, "-m", "jupyter_kernel_client.cli"]
    python = [sys.executable]
    rows: dict[str, list[float]] = {
        "python -c pass": [],
        'python -c "import jupyter_kernel_client"': [],
        "mini-sandbox --help": [],
        'mini-sandbox run -c "print(1)"': [],
        "mini-sandbox sh -- true": [],
    }
    argvs = {
        "python -c pass": [*python, "-c", "pass"],
        'python -c "import jupyter_kernel_client"': [*python, "-c", "import jupyter_kernel_client"],
        "mini-sandbox --help": [*cli, "--help"],
        'mini-sandbox run -c "print(1)"': [*cli, "run", "-c", "print(1)"],
        "mini-sandbox sh -- true": [*cli, "sh", "--", "true"],
    }
    import requests

    http = requests.Session()
    if settings.token:
        http.headers["Authorization"] = f"token {settings.token}"
    for argv in argvs.values():
        wall(argv)  # warm the page cache once
        pool_note = wait_for_pool(http, settings.gateway_http)
    for _ in range(args.runs):
        for name, argv in argvs.items():
            rows[name].append(wall(argv))
            wait_for_pool(http, settings.gateway_http)

    execute: list[float] = []
    command: list[float] = []
    with GatewayKernelSession(config) as session:
        for _ in range(10):
            session.execute("1+1")
            session.run_command("true")
        for _ in range(args.round_trips):
            execute.append(timed(lambda: session.execute("1+1")))
            command.append(timed(lambda: session.run_command("true")))

    print(f"\nmini-sandbox CLI and run_command — {platform.node()}, {os.cpu_count()} CPUs, ")
    print(f"load average {os.getloadavg()[0]:.2f}, gateway {settings.gateway_http}\n")
    print("| what | p50 | p90 | runs |")
    print("|---|---:|---:|---:|")
    for name, samples in rows.items():
        ms = [s * 1000 for s in samples]
        print(f"| `{name}` | {p(ms, 0.5):.0f} ms | {p(ms, 0.9):.0f} ms | {len(ms)} |")
    for name, samples in (('execute("1+1")', execute), ('run_command("true")', command)):
        ms = [s * 1000 for s in samples]
        print(f"| `{name}` round trip | {p(ms, 0.5):.1f} ms | {p(ms, 0.9):.1f} ms | {len(ms)} |")

    run_p50 = statistics.median(rows['mini-sandbox run -c "print(1)"'])
    floor = statistics.median(rows['python -c "import jupyter_kernel_client"'])
    ratio = statistics.median(command) / statistics.median(execute)
    met = "met" if run_p50 <= CLI_TARGET_S else "NOT met"
    print(
        f"\n- `mini-sandbox run -c` p50 ≤ {CLI_TARGET_S} s: {met} ({run_p50:.3f} s; the import "
        f"floor is {floor:.3f} s, the CLI adds {run_p50 - floor:.3f} s)"
    )
    met = "met" if ratio <= COMMAND_TARGET else "NOT met"
    target = f'{COMMAND_TARGET} times `execute("1+1")`'
    print(f'- `run_command("true")` p50 <= {target}: {met} ({ratio:.2f} times)')
    print(f"- CLI: {cli[0]}; every CLI row is a new process and a new session, {pool_note}")


if __name__ == "__main__":
    main()
