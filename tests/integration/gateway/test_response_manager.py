"""The gateway's launch-response path against hostile kernels: real EG 3.3, real sockets.

EG's ResponseManager runs in EG's own venv (``response_harness.py``) with the sandbox's
``sandbox_gateway.response`` applied, bound to 127.0.0.1.  Hostile connections come from other
loopback addresses (127.0.0.2, ...), the way another kernel's container has an address of its
own, and the answers are encrypted by gateway_provisioners' own launcher code.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from testkit.gateway import (
    REPO,
    Gateway,
    free_port,
    gateway_venv,
    kernel_launchers,
)

HARNESS = os.path.join(os.path.dirname(__file__), "response_harness.py")
KERNEL = "127.0.0.1"  # the address the kernel being launched answers from


class Harness:
    """A ResponseManager in EG's venv, driven one JSON request at a time."""

    def __init__(self, stock: bool = False, **env: str) -> None:
        port = free_port()
        self._proc = subprocess.Popen(
            [
                str(gateway_venv() / "bin" / "python"),
                HARNESS,
                str(REPO),
                str(kernel_launchers()),
                *(["--stock"] if stock else []),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "EG_RESPONSE_IP": KERNEL, "EG_RESPONSE_PORT": str(port), **env},
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        hello = self._reply(timeout=60)
        host, _, bound = hello["address"].rpartition(":")
        self.address = (host, int(bound))

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line)

    def _read_stderr(self) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr.append(line)

    def _reply(self, timeout: float) -> dict[str, Any]:
        try:
            reply: dict[str, Any] = json.loads(self._lines.get(timeout=timeout))
        except queue.Empty:
            log = "".join(self._stderr)[-3000:]
            raise AssertionError(f"the harness did not answer within {timeout} s:\n{log}") from None
        return reply

    def request(self, reply_within: float = 30, **request: Any) -> dict[str, Any]:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        return self._reply(reply_within)

    def register(self) -> str:
        kernel_id = str(uuid.uuid4())
        self.request(op="register", kernel_id=kernel_id)
        return kernel_id

    def payload(
        self, kernel_id: str, shell_port: int = 5555, version: int = 1, padding: int = 0
    ) -> bytes:
        info: dict[str, Any] = {
            "kernel_id": kernel_id,
            "shell_port": shell_port,
            "key": "k-" + kernel_id,
        }
        if padding:
            info["padding"] = "x" * padding  # a forgery as large as the size cap lets it be
        reply = self.request(op="payload", info=info, version=version)
        return str(reply["payload"]).encode()

    def wait(self, kernel_id: str, peer: str | None = KERNEL, timeout: float = 5) -> Any:
        """The answer the process proxy of ``kernel_id`` running at ``peer`` gets, or None."""
        reply = self.request(
            op="wait", kernel_id=kernel_id, peer=peer, timeout=timeout, reply_within=timeout + 10
        )
        return reply.get("info")

    def state(self) -> dict[str, Any]:
        return self.request(op="state")

    def send(self, payload: bytes, source: str = KERNEL) -> None:
        """One complete answer, as a launcher sends it: connect, send, close."""
        with socket.create_connection(self.address, timeout=10, source_address=(source, 0)) as s:
            s.sendall(payload)

    def close(self) -> None:
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for reader in self._readers:
            reader.join(timeout=10)
        for pipe in (self._proc.stdout, self._proc.stderr):
            if pipe is not None:
                pipe.close()


class Attack:
    """Hostile connections to the response port; everything is closed by ``close()``."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self.flood_sent = 0
        self.flood_ended: float | None = None

    def connect(self, source: str) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=10, source_address=(source, 0))
        self._sockets.append(sock)
        return sock

    def hold(self, source: str) -> socket.socket:
        """The start of an answer, then nothing, with the connection left open."""
        sock = self.connect(source)
        sock.sendall(b"eyJ2ZXJzaW9uIjogMSwg")
        return sock

    def trickle(self, source: str) -> socket.socket:
        """One base64 byte every 50 ms, for as long as the gateway keeps the connection."""
        sock = self.connect(source)

        def run() -> None:
            with contextlib.suppress(OSError):
                while not self._stop.wait(0.05):
                    sock.sendall(b"A")

        self._start(run)
        return sock

    def flood(self, source: str, total: int = 100 * 2**20) -> None:
        """100 MB of base64, sent as fast as the gateway takes it."""
        sock = self.connect(source)
        started = time.monotonic()
        chunk = b"A" * 2**16

        def run() -> None:
            with contextlib.suppress(OSError):
                while self.flood_sent < total and not self._stop.is_set():
                    self.flood_sent += sock.send(chunk)
            self.flood_ended = time.monotonic() - started

        self._start(run)

    def garbage(self, source: str) -> None:
        """A complete message that is no answer at all."""
        sock = self.connect(source)
        sock.sendall(os.urandom(4096))
        sock.shutdown(socket.SHUT_WR)

    def _start(self, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        self._threads.append(thread)

    def close(self) -> None:
        self._stop.set()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(timeout=10)


def closed_after(sock: socket.socket, limit: float) -> float | None:
    """Seconds until the gateway closes ``sock`` (None if still open after ``limit``)."""
    started = time.monotonic()
    sock.settimeout(limit)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return None
    except OSError:
        pass  # reset: the gateway aborted the connection
    return time.monotonic() - started


def refusal(h: Harness, payload: bytes) -> str:
    """Send ``payload`` from the kernel's address; the warning its refusal logged."""
    before = len(h.state()["warnings"])
    h.send(payload)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        warnings = h.state()["warnings"]
        if len(warnings) > before:
            assert len(warnings) == before + 1, warnings[before:]
            return str(warnings[before])
        time.sleep(0.02)
    raise AssertionError("the answer was not refused")


@pytest.fixture
def harness() -> Iterator[Callable[..., Harness]]:
    started: list[Harness] = []

    def start(stock: bool = False, **env: str) -> Harness:
        started.append(Harness(stock, **env))
        return started[-1]

    yield start
    for h in started:
        h.close()


@pytest.fixture
def attack() -> Iterator[Callable[[Harness], Attack]]:
    started: list[Attack] = []

    def start(h: Harness) -> Attack:
        started.append(Attack(h.address))
        return started[-1]

    yield start
    for a in started:
        a.close()


def test_valid_answer_is_delivered_while_the_port_is_under_attack(
    harness: Callable[..., Harness], attack: Callable[[Harness], Attack]
) -> None:
    h = harness()
    kernel_id = h.register()
    answer = h.payload(kernel_id)
    hostile = attack(h)
    held = [hostile.hold("127.0.0.2") for _ in range(3)]
    trickling = [hostile.trickle("127.0.0.3") for _ in range(2)]
    hostile.flood("127.0.0.4")
    for _ in range(3):
        hostile.garbage("127.0.0.5")
    h.send(h.payload(str(uuid.uuid4())), source="127.0.0.6")  # valid, for nobody launched
    time.sleep(0.3)  # the hostile connections are all accepted before the real answer

    started = time.monotonic()
    h.send(answer)
    info = h.wait(kernel_id, timeout=10)
    delivered = time.monotonic() - started

    assert info == {"kernel_id": kernel_id, "shell_port": 5555, "key": "k-" + kernel_id}
    assert delivered < 2, f"the answer took {delivered:.2f} s"  # the deadline is 5 s
    assert h.state()["stall"] < 0.25  # the event loop never waited on a hostile connection
    # 100 MB were cut off at the size cap, long before the deadline.
    deadline = time.monotonic() + 3
    while hostile.flood_ended is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hostile.flood_ended is not None and hostile.flood_ended < 3
    assert hostile.flood_sent < 16 * 2**20  # socket buffers, not the 100 MB
    # The slow ones are still open: only their own deadline (5 s) closes them.
    assert all(closed_after(sock, 0.1) is None for sock in held + trickling)


def test_silent_and_trickling_connections_are_closed_at_the_deadline(
    harness: Callable[..., Harness], attack: Callable[[Harness], Attack]
) -> None:
    h = harness(SANDBOX_RESPONSE_TIMEOUT="1")
    hostile = attack(h)
    silent, trickling = hostile.hold("127.0.0.2"), hostile.trickle("127.0.0.3")

    closed = [closed_after(silent, 5), closed_after(trickling, 5)]

    assert all(t is not None and t < 2.5 for t in closed), closed
    state = h.state()
    assert state["open"] == 0
    assert sum("no complete answer within 1 s" in line for line in state["warnings"]) == 2


def test_a_forged_answer_from_another_address_is_never_used(
    harness: Callable[..., Harness],
) -> None:
    h = harness()
    kernel_id = h.register()
    h.send(h.payload(kernel_id, shell_port=6666), source="127.0.0.2")  # before the real one
    h.send(h.payload(kernel_id, shell_port=5555))
    h.send(h.payload(kernel_id, shell_port=7777), source="127.0.0.3")  # and after it
    settle(h, 3)  # all three held

    assert h.wait(kernel_id)["shell_port"] == 5555
    warnings = h.state()["warnings"]
    for forger in ("127.0.0.2", "127.0.0.3"):
        ignored = f"'{kernel_id}' from {forger} ignored: the kernel runs at 127.0.0.1."
        assert any(ignored in line for line in warnings), warnings

    # A kernel whose only answer is forged never gets it: its launch runs into its timeout.
    victim = h.register()
    h.send(h.payload(victim, shell_port=6666), source="127.0.0.2")
    settle(h, 4)
    assert h.wait(victim, timeout=1) is None
    assert victim in h.state()["registered"]


def hostile_addresses(count: int, first: int = 0) -> list[str]:
    """``count`` loopback addresses, one per hostile kernel, none a kernel's (127.0.250.x)."""
    return [f"127.0.{n // 250}.{n % 250 + 2}" for n in range(first, first + count)]


class Forger:
    """Forged answers sent from many addresses at once, in the background, until ``close()``."""

    def __init__(self, h: Harness, payloads: list[bytes], sources: list[str]) -> None:
        self._h, self._payloads, self._sources = h, payloads, sources
        self._sent = [0] * 4
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(4)]
        for thread in self._threads:
            thread.start()

    def _run(self, n: int) -> None:
        # Each thread its own quarter of the addresses: no address has many connections open.
        for payload in self._payloads:
            for source in self._sources[n::4]:
                with contextlib.suppress(OSError):  # a refused connection is reset
                    self._h.send(payload, source=source)
                    self._sent[n] += 1

    def close(self) -> int:
        """Waits until every forgery is sent; how many were."""
        for thread in self._threads:
            thread.join(timeout=120)
        return sum(self._sent)


def settle(h: Harness, handled: int) -> dict[str, Any]:
    """The state once ``handled`` connections in all have been received or refused."""
    deadline = time.monotonic() + 30
    while (state := h.state())["handled"] < handled:
        assert time.monotonic() < deadline, f"{state['handled']} of {handled} handled"
        time.sleep(0.05)
    return state


def real_answer(kernel_id: str, shell_port: int = 5555) -> dict[str, Any]:
    return {"kernel_id": kernel_id, "shell_port": shell_port, "key": "k-" + kernel_id}


def test_forged_answers_from_many_addresses_never_block_the_real_one(
    harness: Callable[..., Harness],
) -> None:
    # 40 hostile kernels, each at an address of its own, know the id being launched.
    h = harness()
    kernel_id = h.register()
    forged = [h.payload(kernel_id, shell_port=6666)]
    before = Forger(h, forged, hostile_addresses(40)).close()
    during = Forger(h, forged, hostile_addresses(40, first=40))
    h.send(h.payload(kernel_id))
    sent = before + during.close()

    assert h.wait(kernel_id) == real_answer(kernel_id)
    assert sent == 80
    # Every forgery was a valid answer for this launch: held and then dropped, refused once the
    # launch knew its kernel's address, or refused once it had its answer.
    lines = [line for line in settle(h, 81)["warnings"] if kernel_id in line]
    reasons = ("ignored: the kernel runs at", "runs at 127.0.0.1", "not being launched")
    assert len(lines) == 80
    assert all(any(reason in line for reason in reasons) for line in lines), lines


def test_once_a_launch_knows_its_kernels_address_forgeries_are_refused_on_arrival(
    harness: Callable[..., Harness],
) -> None:
    # A container launch: the proxy polls with the container's address before the kernel inside
    # has answered.  A restart registers the same id again and goes through the same.
    h = harness()
    kernel_id = str(uuid.uuid4())
    for launch, shell_port in enumerate((5555, 5556)):  # the launch, then the restart
        h.request(op="register", kernel_id=kernel_id)
        assert h.wait(kernel_id, timeout=0.2) is None  # polled: bound to 127.0.0.1
        since = len(h.state()["warnings"])
        forged = [h.payload(kernel_id, shell_port=6666)]
        assert Forger(h, forged, hostile_addresses(20)).close() == 20
        refused = settle(h, 21 * launch + 20)["warnings"][since:]

        h.send(h.payload(kernel_id, shell_port=shell_port))
        assert h.wait(kernel_id) == real_answer(kernel_id, shell_port)
        assert len(refused) == 20
        assert all(f"kernel '{kernel_id}' runs at 127.0.0.1" in line for line in refused)
        assert h.state()["held"] == 0  # nothing was kept for them


def test_a_flood_of_forged_answers_holds_bounded_memory_and_displaces_no_real_answer(
    harness: Callable[..., Harness],
) -> None:
    # Six kernels launching at once, each at an address of its own, as containers are, none
    # polled yet.  20 hostile kernels forge ~20 KB answers for all six before and while the real
    # answers arrive (26 addresses: fewer than the cap, so every real answer gets in); then,
    # with the real answers held, 300 more addresses (more than the cap) flood.
    h = harness(SANDBOX_RESPONSE_MAX_ANSWERS="32")
    kernels = {h.register(): f"127.0.250.{n + 1}" for n in range(6)}
    forged = [h.payload(kernel_id, shell_port=6666, padding=20_000) for kernel_id in kernels]
    Forger(h, forged, hostile_addresses(10)).close()
    during = Forger(h, forged, hostile_addresses(10, first=10))
    for kernel_id, address in kernels.items():
        h.send(h.payload(kernel_id), source=address)
    during.close()
    settle(h, 6 * 21)
    sent = Forger(h, forged, hostile_addresses(300, first=20)).close()
    state = settle(h, 6 * 321)

    for kernel_id, address in kernels.items():
        assert h.wait(kernel_id, peer=address, timeout=1) == real_answer(kernel_id)
    assert sent == 6 * 300
    # 1,920 forgeries of 20 KB each: the six real answers and 26 forgeries held, no more.
    assert state["held"] == 32
    assert state["held_bytes"] < 26 * 20_200 + 6 * 200
    assert h.state()["held"] == 0  # the launches took their answers: the forgeries went too


def test_without_a_kernel_address_the_first_answer_is_taken(
    harness: Callable[..., Harness],
) -> None:
    h = harness()
    for unknown in (None, "0.0.0.0"):
        kernel_id = h.register()
        h.send(h.payload(kernel_id, shell_port=6666), source="127.0.0.2")
        h.send(h.payload(kernel_id, shell_port=5555))
        time.sleep(0.2)
        assert h.wait(kernel_id, peer=unknown)["shell_port"] == 6666


def test_version_0_answers_are_refused(harness: Callable[..., Harness]) -> None:
    # Version 0 is AES-keyed by kernel_id[:16]: anyone who knows the id can forge one.
    h = harness()
    kernel_id = h.register()

    assert "not a version-1 answer" in refusal(h, h.payload(kernel_id, version=0))
    assert h.wait(kernel_id, timeout=1) is None
    h.send(h.payload(kernel_id))
    assert h.wait(kernel_id)["shell_port"] == 5555


def test_answers_that_are_not_for_a_launch_change_nothing(harness: Callable[..., Harness]) -> None:
    h = harness()
    kernel_id = h.register()
    stranger = str(uuid.uuid4())
    unsigned = h.request(op="payload", info={"shell_port": 1}, version=1)["payload"].encode()
    cases = {
        h.payload(stranger): f"kernel id '{stranger}' is not being launched",
        b"{not base64 at all}": "not a version-1 answer (not base64-encoded JSON)",
        b"bm90IEpTT04=": "not a version-1 answer (not base64-encoded JSON)",  # "not JSON"
        b"e30=": "not a version-1 answer (no version 1 in it)",  # {}
        b"eyJ2ZXJzaW9uIjogMSwgImtleSI6ICJBQUFBIiwgImNvbm5faW5mbyI6ICJBQUFBIn0=": (
            "could not be decrypted with the gateway's key"  # {"version": 1, "key": "AAAA", ...}
        ),
        unsigned: "the decrypted answer names no kernel id",
    }

    for payload, reason in cases.items():
        assert refusal(h, payload) == f"Launch response from {KERNEL} refused: {reason}"

    state = h.state()
    assert state["registered"] == [kernel_id]
    assert len(state["warnings"]) == len(cases)  # one line per connection, no payload in any
    # An answer that arrived before its kernel was registered is not kept for it either.
    h.request(op="register", kernel_id=stranger)
    assert h.wait(stranger, timeout=0.5) is None
    h.send(h.payload(kernel_id))
    assert h.wait(kernel_id)["shell_port"] == 5555


def test_connections_are_capped_per_address(
    harness: Callable[..., Harness], attack: Callable[[Harness], Attack]
) -> None:
    h = harness(SANDBOX_RESPONSE_MAX_PER_PEER="4")
    hostile = attack(h)
    held = [hostile.hold("127.0.0.2") for _ in range(4)]
    time.sleep(0.2)
    fifth = hostile.hold("127.0.0.2")

    refused = closed_after(fifth, 2)
    assert refused is not None and refused < 1  # the deadline is 5 s
    assert all(closed_after(sock, 0.1) is None for sock in held)
    assert h.state()["open"] == 4


def test_a_full_port_still_takes_a_new_kernels_answer(
    harness: Callable[..., Harness], attack: Callable[[Harness], Attack]
) -> None:
    # Two hostile addresses fill every slot; a newcomer evicts the busiest address's oldest.
    h = harness(SANDBOX_RESPONSE_MAX_CONNECTIONS="4", SANDBOX_RESPONSE_MAX_PER_PEER="2")
    hostile = attack(h)
    held = [hostile.hold(source) for source in ("127.0.0.2", "127.0.0.3") for _ in range(2)]
    time.sleep(0.2)
    kernel_id = h.register()

    started = time.monotonic()
    h.send(h.payload(kernel_id))
    assert h.wait(kernel_id)["shell_port"] == 5555
    assert time.monotonic() - started < 2
    assert sum(closed_after(sock, 0.2) is not None for sock in held) == 1


def test_stock_enterprise_gateway_stalls_on_one_silent_connection(
    harness: Callable[..., Harness], attack: Callable[[Harness], Attack]
) -> None:
    # The defect sandbox_gateway.response exists for is still upstream: when this fails, EG fixed
    # it.
    h = harness(stock=True)
    attack(h).hold("127.0.0.2")
    time.sleep(0.2)
    kernel_id = h.register()
    h.send(h.payload(kernel_id))
    assert h.wait(kernel_id, peer=None, timeout=3) is None


@pytest.mark.parametrize(
    ("name", "value"),
    [("SANDBOX_RESPONSE_TIMEOUT", "nan"), ("SANDBOX_RESPONSE_MAX_BYTES", "0")],
)
def test_a_malformed_limit_stops_the_gateway_at_start(name: str, value: str) -> None:
    # A limit that could not hold (no deadline, no room) is refused when the config loads.
    gateway = Gateway(env={name: value})
    try:
        with pytest.raises(RuntimeError, match="gateway exited early") as failure:
            gateway.start()
    finally:
        gateway.stop()
    assert f"{name}={value!r} must be positive and finite" in str(failure.value)
