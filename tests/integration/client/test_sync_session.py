"""GatewayKernelSession against a real Enterprise Gateway with real kernels."""

from __future__ import annotations

import base64
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from jupyter_kernel_client import (
    ExecutionTimeoutError,
    GatewayKernelSession,
    KernelDiedError,
    OutputEvent,
    TransportError,
    UnknownKernelNameError,
)
from testkit.gateway import Gateway, free_port

# A 1x1 PNG, built in the kernel so no plotting library is needed there.
PNG_CODE = """
import base64, struct, zlib
from IPython.display import Image, display
def chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
png = (b'\\x89PNG\\r\\n\\x1a\\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 1, 1, 8, 2, 0, 0, 0))
       + chunk(b'IDAT', zlib.compress(b'\\x00\\xff\\x00\\x00')) + chunk(b'IEND', b''))
display(Image(data=png))
"""


@pytest.fixture
def session(gateway: Gateway) -> Iterator[GatewayKernelSession]:
    with GatewayKernelSession(gateway.http, gateway.ws, "python3") as s:
        yield s


def test_value_print_image_and_exception(session: GatewayKernelSession) -> None:
    assert str(session.execute("2 + 2")) == "4"
    assert session.execute("2 + 2").execute_result == {"text/plain": "4"}

    printed = session.execute("print('hi')")
    assert str(printed) == "hi" and printed.stdout == "hi\n"

    shown = session.execute(PNG_CODE)
    assert shown.ok, shown
    assert len(shown.images) == 1 and shown.images[0].startswith(b"\x89PNG")
    assert base64.b64decode(shown.display_data[0]["image/png"]) == shown.images[0]

    failed = session.execute("raise KeyError('nope')")
    assert failed.status == "error"
    assert failed.error is not None and failed.error.ename == "KeyError"
    assert "KeyError" in failed.error.plain_traceback()
    stderr = session.execute("import sys; sys.stderr.write('warn')")
    assert stderr.stderr == "warn"


def test_seed_readme_snippet_runs_as_written_with_its_indentation(
    session: GatewayKernelSession, tmp_path: os.PathLike[str]
) -> None:
    target = f"{tmp_path}/my_output.txt"
    result = session.execute(f"""
        with open('{target}', 'w') as f:
            f.write('Hello from the kernel!')
    """)
    assert result.ok, result
    with open(target) as f:
        assert f.read() == "Hello from the kernel!"


def test_streaming_callback_sees_output_before_the_execution_ends(
    session: GatewayKernelSession,
) -> None:
    seen: list[tuple[float, OutputEvent]] = []
    result = session.execute(
        "import time\nprint('first', flush=True)\ntime.sleep(1.5)\nprint('second')",
        on_output=lambda event: seen.append((time.monotonic(), event)),
    )
    finished = time.monotonic()
    assert "".join(e.text for _, e in seen) == "first\nsecond\n" == result.stdout
    assert finished - seen[0][0] > 1.0  # 'first' arrived while the kernel was still sleeping


def test_timeout_interrupts_and_the_session_stays_usable(session: GatewayKernelSession) -> None:
    session.execute("state = 'kept'")
    started = time.monotonic()
    with pytest.raises(ExecutionTimeoutError) as late:
        session.execute("import time; time.sleep(120)", timeout=1)
    assert time.monotonic() - started < 60  # interrupted, not waited out
    assert late.value.stopped
    assert str(session.execute("state")) == "'kept'"


def test_kernel_killed_mid_execute_is_reported_as_died(session: GatewayKernelSession) -> None:
    pid = int(str(session.execute("import os; os.getpid()")))
    killer = threading.Timer(1.0, os.kill, (pid, signal.SIGKILL))
    killer.start()
    try:
        with pytest.raises(KernelDiedError):
            session.execute("import time; time.sleep(120)", timeout=90)
    finally:
        killer.cancel()


def test_launch_env_reaches_the_kernel(gateway: Gateway) -> None:
    env = {"KERNEL_PROJECT": "sandbox-42"}
    with GatewayKernelSession(gateway.http, gateway.ws, "python3", launch_env=env) as s:
        assert str(s.execute("import os; os.environ['KERNEL_PROJECT']")) == "'sandbox-42'"
        assert str(s.execute("os.environ['KERNEL_USERNAME'] != 'root'")) == "True"


def test_unknown_kernel_name_fails_at_once_with_a_clear_error(gateway: Gateway) -> None:
    started = time.monotonic()
    session = GatewayKernelSession(
        gateway.http, gateway.ws, "no-such-kernel", max_retries=3, retry_delay=20
    )
    with pytest.raises(UnknownKernelNameError, match=r"no-such-kernel.*python3"):
        session.start()
    assert time.monotonic() - started < 20  # not retried
    assert session.closed


def test_shutdown_removes_the_kernel_from_the_gateway(gateway: Gateway) -> None:
    with GatewayKernelSession(gateway.http, gateway.ws, "python3") as s:
        kernel_id = s.kernel_id
        assert any(k["id"] == kernel_id for k in gateway.kernels())
    assert all(k["id"] != kernel_id for k in gateway.kernels())


def test_attach_to_an_existing_kernel_leaves_it_running(gateway: Gateway) -> None:
    with GatewayKernelSession(gateway.http, gateway.ws, "python3") as owner:
        owner.execute("shared = 'from owner'")
        with GatewayKernelSession(
            gateway.http, gateway.ws, "python3", kernel_id=owner.kernel_id
        ) as guest:
            assert str(guest.execute("shared")) == "'from owner'"
        assert str(owner.execute("shared")) == "'from owner'"


def test_gateway_down_at_start_then_up_retries_succeed() -> None:
    late = Gateway()
    starter = threading.Timer(1.0, late.start, kwargs={"wait": False})
    starter.start()
    try:
        with GatewayKernelSession(
            late.http, late.ws, "python3", max_retries=8, retry_delay=0.5, startup_timeout=60
        ) as s:
            assert str(s.execute("1 + 1")) == "2"
    finally:
        starter.join()
        late.stop()


def test_gateway_never_up_fails_after_max_retries() -> None:
    # A listener that accepts and drops every connection counts the client's attempts.
    attempts = 0
    listener = socket.create_server(("127.0.0.1", free_port()))
    port = listener.getsockname()[1]
    listener.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        nonlocal attempts
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            attempts += 1
            conn.close()

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        session = GatewayKernelSession(
            f"http://127.0.0.1:{port}",
            f"ws://127.0.0.1:{port}",
            "python3",
            max_retries=2,
            retry_delay=0.1,
        )
        with pytest.raises(TransportError, match="kernels"):
            session.start()
    finally:
        stop.set()
        thread.join()
        listener.close()
    # requests retries a dropped keep-alive connection once by itself: 1 or 2 per attempt.
    assert 3 <= attempts <= 6


def test_bad_launch_env_changes_nothing(gateway: Gateway) -> None:
    before = {k["id"] for k in gateway.kernels()}
    with pytest.raises(TypeError):
        GatewayKernelSession(gateway.http, gateway.ws, "python3", launch_env={"KERNEL_X": 1})  # type: ignore[dict-item]
    assert {k["id"] for k in gateway.kernels()} == before
    assert requests.get(gateway.http + "/api/kernelspecs", timeout=5).ok


def test_interrupt_from_another_thread_ends_the_running_execute(
    session: GatewayKernelSession,
) -> None:
    threading.Timer(1.0, session.interrupt).start()
    result = session.execute("import time; time.sleep(60)", timeout=45)
    assert result.error is not None and result.error.ename == "KeyboardInterrupt"
    assert str(session.execute("'usable'")) == "'usable'"


def test_websocket_speaks_the_v1_kernel_protocol(session: GatewayKernelSession) -> None:
    # The gateway forwards kernel frames untouched in v1; the legacy JSON form re-encodes them.
    assert session.subprotocol == "v1.kernel.websocket.jupyter.org"
