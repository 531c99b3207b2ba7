"""Bounded memory: a kernel printing 300 MB leaves the client's peak memory growth under
100 MiB, on both faces; a single 300 MB message is cut by the gateway to its limit (16 MiB by
default) and the result says truncated; a message above the client's own ``max_message_bytes``
(but within the gateway's limit) is refused unread; the session stays usable.

Each run is a fresh subprocess, so that its peak resident set (VmHWM) measures this client
alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from jupyter_kernel_client import GatewayConfig, GatewayKernelSession, TransportError
from testkit.gateway import Gateway

MIB = 1024 * 1024
CHUNKED = "chunk = 'x' * (1 << 20)\nfor _ in range(300):\n    print(chunk, end='', flush=True)"
ONE_MESSAGE = "print('x' * (300 * (1 << 20)))"

WORKER = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path
    from jupyter_kernel_client import (
        AsyncGatewayKernelSession, GatewayConfig, GatewayKernelSession, TransportError,
    )

    http, ws, face, code = sys.argv[1:5]
    config = GatewayConfig(http, ws)

    def hwm():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

    streamed = 0
    def count(event):
        global streamed
        streamed += len(event.text)

    def outcome(before, result=None, error=None):
        report = {"growth": hwm() - before, "streamed": streamed}
        if result is not None:
            report.update(truncated=result.truncated, kept=len(result.stdout),
                          tail=str(result)[-120:])
        if error is not None:
            report.update(error=type(error).__name__, message=str(error))
        return report

    def run_sync():
        with GatewayKernelSession(config) as session:
            session.execute("1 + 1")
            before = hwm()
            try:
                report = outcome(before, session.execute(code, timeout=600, on_output=count))
            except TransportError as exc:
                report = outcome(before, error=exc)
            report["after"] = str(session.execute("1 + 1", timeout=600))
            return report

    async def run_async():
        async with AsyncGatewayKernelSession(config) as session:
            await session.execute("1 + 1")
            before = hwm()
            try:
                result = await session.execute(code, timeout=600, on_output=count)
                report = outcome(before, result)
            except TransportError as exc:
                report = outcome(before, error=exc)
            report["after"] = str(await session.execute("1 + 1", timeout=600))
            return report

    report = run_sync() if face == "sync" else asyncio.run(run_async())
    print("@@" + json.dumps(report))
    """
)


def run_worker(gateway: Gateway, face: str, code: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", WORKER, gateway.http, gateway.ws, face, code],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("@@")]
    report: dict[str, object] = json.loads(line[2:])
    return report


@pytest.mark.parametrize("face", ["sync", "async"])
def test_300_mb_of_output_is_truncated_within_bounded_memory(gateway: Gateway, face: str) -> None:
    report = run_worker(gateway, face, CHUNKED)
    assert report["streamed"] == 300 * MIB  # every byte went through the client
    assert report["truncated"] is True
    assert report["kept"] == 64 * MIB  # the default max_output_bytes
    assert str(report["tail"]).endswith(
        "x\n[output truncated: more than max_output_bytes or the gateway's message limit; "
        "the rest was dropped]"
    )
    assert int(str(report["growth"])) < 100 * MIB, report
    assert report["after"] == "2"


@pytest.mark.parametrize("face", ["sync", "async"])
def test_a_single_300_mb_message_is_cut_by_the_gateway(gateway: Gateway, face: str) -> None:
    report = run_worker(gateway, face, ONE_MESSAGE)
    assert "error" not in report, report
    assert report["truncated"] is True
    # The gateway's default SANDBOX_MAX_MESSAGE_BYTES; the client's own limit is 64 MiB.
    assert report["kept"] == report["streamed"] == 16 * MIB
    assert str(report["tail"]).endswith(
        "x\n[output truncated: more than max_output_bytes or the "
        "gateway's message limit; the rest was dropped]"
    )
    assert int(str(report["growth"])) < 100 * MIB, report
    assert report["after"] == "2"


def test_a_small_limit_as_in_the_readme(gateway: Gateway) -> None:
    config = GatewayConfig(gateway.http, gateway.ws, max_output_bytes=MIB)
    with GatewayKernelSession(config) as session:
        result = session.execute("for _ in range(10): print('x' * 1_000_000, flush=True)")
        assert (result.truncated, len(result.stdout)) == (True, MIB)
        assert result.ok
        # One message above max_message_bytes (here 2 MiB) but within the gateway's limit is
        # refused by the client, not truncated.
        with pytest.raises(TransportError, match="max_message_bytes"):
            session.execute("print('x' * 3_000_000)")
        assert str(session.execute("'usable'")) == "'usable'"
