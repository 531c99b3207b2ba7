"""Enterprise Gateway 3.3's launch-response path, hardened against hostile kernels.

A remote kernel (container, pod) sends its connection info, encrypted, to the gateway's response
address (``EG_RESPONSE_IP``:``EG_RESPONSE_PORT``).  Every kernel knows that address and the
gateway's public key (both are in its environment), and code in a kernel is hostile.  Stock EG
reads each response connection from a PeriodicCallback with no deadline and no size cap, one
connection at a time, so a kernel that connects and sends half a message stalls every launch on
the gateway.  It also accepts a "version 0" answer encrypted with ``kernel_id[:16]`` (a public
value), and posts whichever valid answer for a kernel id arrives, from anybody: another kernel
could point a new user's session at ports of its own choosing.

What replaces it (``apply()``):

- An asyncio server on the socket EG binds (same port and bind rules).  Each connection is its
  own task with a total deadline (``SANDBOX_RESPONSE_TIMEOUT``, seconds) and a size cap
  (``SANDBOX_RESPONSE_MAX_BYTES``); nothing waits on one connection but that connection.  Open
  connections are capped per source address (``SANDBOX_RESPONSE_MAX_PER_PEER``) and in total
  (``SANDBOX_RESPONSE_MAX_CONNECTIONS``); at the total cap a newcomer evicts the oldest
  connection of the address holding the most, provided that address holds at least two and more
  than the newcomer's.  So many kernels together cannot lock one out, and a kernel's answer, its
  address's only connection, is never cut off: only more distinct addresses than the cap, each
  holding a connection, refuse a newcomer.
- Only version-1 answers (RSA-wrapped AES key) are accepted; decryption runs in a worker thread.
  A refused connection is logged once at warning, without its payload, and changes nothing.
- An answer is bound to its sender.  A forged answer can be perfectly well-formed: the gateway's
  public key and the victim's kernel id are all it takes, so what tells the real answer apart is
  only the address it comes from.  On Docker a kernel's container has one address on its own
  network, on Kubernetes its pod IP, and code in a kernel cannot choose another (no NET_ADMIN):
  the process proxy learns that address (``assigned_ip``) before it connects, and takes only the
  answer sent from it.  A forged answer from another kernel is never used, and it may neither
  displace nor block the real one:

  - Once the process proxy has asked with its kernel's address (its first poll after the
    container or pod runs), the launch is bound to it: answers held from other addresses are
    dropped (logged as ignored) and later ones are refused on arrival, at no cost but their
    decryption.  The kernel's own first answer is always taken in.
  - Before that, every valid answer is kept, the first per address and kernel id, since any of
    them may be the kernel's.  There is no cap per kernel id (a cap there let eight hostile
    addresses lock the real answer out of a launch or restart); the cap is on all answers held
    (``SANDBOX_RESPONSE_MAX_ANSWERS``), and at the cap a newcomer evicts the oldest answer of the
    address holding the most, provided that address holds at least two and more than the
    newcomer's.  A kernel's address holds one answer, so its answer is never evicted, and is
    refused only when more distinct addresses than the cap hold answers, i.e. more hostile
    kernels than the cap: keep it above ``SANDBOX_MAX_KERNELS`` (an unused slot costs nothing).
  - An answer is held as its decrypted bytes (at most ``SANDBOX_RESPONSE_MAX_BYTES``) and parsed
    only when taken, so forgeries cost at most ``MAX_ANSWERS x MAX_BYTES`` of memory whatever
    JSON they carry (a bound launch holds one more answer, its kernel's).  A launch that ends
    (answer taken, launch failed, or registered again by a restart) frees its answers.
  - Only when the proxy does not know its kernel's address (no ``assigned_ip``, or an unspecified
    one) is the first answer taken.  Kernels that share one address (local or SSH-launched
    kernels on one host, NAT) cannot be told apart; the sandbox launches none.
- A launch that fails drops its registration, so late answers for it are refused.

The launch timeout (``KERNEL_LAUNCH_TIMEOUT``) is untouched: a launch whose answer never comes
ends there, as before.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import json
import os
import socket
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from Cryptodome.Cipher import AES, PKCS1_v1_5
from Cryptodome.Random import get_random_bytes
from Cryptodome.Util.Padding import unpad
from enterprise_gateway.services.processproxies import processproxy
from enterprise_gateway.services.processproxies.processproxy import (
    RemoteProcessProxy,
    ResponseManager,
)
from tornado.ioloop import IOLoop

_AES_KEY_BYTES = 16  # what gateway_provisioners' launchers generate


@dataclass(frozen=True)
class ResponseLimits:
    """Bounds on what response connections, source addresses and held answers may cost."""

    timeout: float = 5.0
    """SANDBOX_RESPONSE_TIMEOUT: seconds from accept to the sender's end of stream."""
    max_bytes: int = 64 * 1024
    """SANDBOX_RESPONSE_MAX_BYTES: real answers are 1-2 KB."""
    max_per_peer: int = 4
    """SANDBOX_RESPONSE_MAX_PER_PEER: open connections from one source address."""
    max_connections: int = 256
    """SANDBOX_RESPONSE_MAX_CONNECTIONS: open connections in total."""
    max_answers: int = 1024
    """SANDBOX_RESPONSE_MAX_ANSWERS: answers held for launches not yet bound to an address."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ResponseLimits:
        """The limits from ``SANDBOX_RESPONSE_*``; a malformed or non-positive value raises."""
        values: dict[str, Any] = {}
        for field in fields(cls):
            name = "SANDBOX_RESPONSE_" + field.name.upper()
            raw = environ.get(name, "").strip()
            if not raw:
                continue
            kind = float if field.name == "timeout" else int
            try:
                value = kind(raw)
            except ValueError:
                raise ValueError(f"{name}={raw!r} is not a number") from None
            if not 0 < value < float("inf"):
                raise ValueError(f"{name}={raw!r} must be positive and finite")
            values[field.name] = value
        return cls(**values)


class _Refused(Exception):
    """A response connection that changes nothing; the message says why (never the payload)."""


@dataclass
class _Connection:
    peer: str
    task: asyncio.Task[None]
    evicted: bool = False


@dataclass(frozen=True)
class _Answer:
    kernel_id: str
    plain: bytes  # the decrypted JSON object, parsed again only when a launch takes it


class _Candidates:
    """The valid answers received for one kernel id being launched, by sender address."""

    def __init__(self) -> None:
        self.answers: dict[str, bytes] = {}  # first answer per address, arrival order
        self.expected: str | None = None  # the kernel's address, once its proxy has asked
        self.arrived = asyncio.Event()


def _normalize_ip(address: object) -> str | None:
    """A specific IP address in canonical form, or None for a missing/unspecified/non-IP value."""
    if not isinstance(address, str):
        return None
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return None if ip.is_unspecified else str(ip)


def _decode_answer(private_key: Any, data: bytes) -> _Answer:
    """Decrypt a version-1 answer: base64(JSON{version, key: RSA(aes_key), conn_info: AES(..)})."""
    try:
        envelope = json.loads(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError, RecursionError):
        # Version 0 answers (bare AES, keyed by kernel_id[:16], which every kernel knows) end here.
        raise _Refused("not a version-1 answer (not base64-encoded JSON)") from None
    if not isinstance(envelope, dict) or envelope.get("version") != 1:
        raise _Refused("not a version-1 answer (no version 1 in it)")
    key, conn_info = envelope.get("key"), envelope.get("conn_info")
    if not isinstance(key, str) or not isinstance(conn_info, str):
        raise _Refused("a version-1 answer without key or conn_info")
    try:
        # A random sentinel of the expected length: a failed RSA unwrap is indistinguishable
        # from a wrong key until the AES padding check below.
        aes_key = PKCS1_v1_5.new(private_key).decrypt(
            base64.b64decode(key, validate=True),
            get_random_bytes(_AES_KEY_BYTES),
            expected_pt_len=_AES_KEY_BYTES,
        )
        cipher = AES.new(aes_key, AES.MODE_ECB)
        plain = unpad(cipher.decrypt(base64.b64decode(conn_info, validate=True)), 16)
        info = json.loads(plain.decode("utf-8"))
    except (ValueError, TypeError, RecursionError):
        raise _Refused("could not be decrypted with the gateway's key") from None
    if not isinstance(info, dict) or not isinstance(info.get("kernel_id"), str):
        raise _Refused("the decrypted answer names no kernel id")
    return _Answer(info["kernel_id"], plain)


class SandboxResponseManager(ResponseManager):
    """EG's ResponseManager with bounded, concurrent reads and answers bound to their sender."""

    _instance = None  # its own singleton slot (traitlets' SingletonConfigurable)
    limits: ClassVar[ResponseLimits] = ResponseLimits()
    # EG's untyped __init__ sets None, which mypy takes for the attribute's type.
    _response_socket: socket.socket | None  # type: ignore[assignment]

    def __init__(self, **kwargs: Any) -> None:
        self._server: asyncio.base_events.Server | None = None
        self._server_task: asyncio.Task[None] | None = None
        self._open: dict[str, list[_Connection]] = {}
        self._open_total = 0
        # Answers held for launches not bound to an address yet: sender -> kernel ids, oldest
        # first.  Only these count against max_answers.
        self._held: dict[str, dict[str, None]] = {}
        self._held_total = 0
        # One thread: RSA unwrapping stays off the event loop, and the queue is bounded by the
        # connection caps because a connection keeps its slot until its answer is decoded.
        self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eg-response")
        super().__init__(**kwargs)  # binds the socket and calls _start_response_manager()

    # --- EG's public surface -------------------------------------------------------------------

    def register_event(self, kernel_id: str) -> None:
        """Register ``kernel_id`` so answers for it are kept (a re-registration starts afresh)."""
        self._drop(kernel_id)
        self._response_registry[kernel_id] = _Candidates()

    def unregister(self, kernel_id: str) -> None:
        """Forget ``kernel_id``: later answers for it are refused."""
        self._drop(kernel_id)

    async def get_connection_info(self, kernel_id: str, peer: str | None = None) -> dict[str, Any]:
        """The answer for ``kernel_id`` sent from ``peer``, waiting as briefly as stock EG does.

        ``peer`` is the kernel's address (the process proxy's ``assigned_ip``): from the first
        call with it on, the launch takes answers from that address only.  When it is None or
        unspecified the first answer is taken.  Raises ``asyncio.TimeoutError`` when there is no
        such answer yet, like stock EG, and pops the registration once an answer is taken.
        """
        candidates: _Candidates = self._response_registry[kernel_id]
        expected = _normalize_ip(peer)
        if expected is not None and candidates.expected != expected:
            self._bind(kernel_id, candidates, expected)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + processproxy.connection_interval
        while True:
            if expected is None:
                answer = next(iter(candidates.answers.values()), None)
            else:
                answer = candidates.answers.get(expected)
            if answer is not None:
                if self._response_registry.get(kernel_id) is candidates:  # not a restart's
                    self._drop(kernel_id)
                info: dict[str, Any] = json.loads(answer)
                return info
            candidates.arrived.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise asyncio.TimeoutError
            await asyncio.wait_for(candidates.arrived.wait(), remaining)

    def stop_response_manager(self) -> None:
        """Stop serving: close the socket and every open response connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        elif self._server_task is not None:
            self._server_task.cancel()
        self._server_task = None
        for held in list(self._open.values()):
            for connection in held:
                connection.task.cancel()
        if self._response_socket is not None:
            self._response_socket.close()
            self._response_socket = None
        self._decoder.shutdown(wait=False)

    # --- serving ---------------------------------------------------------------------------------

    def _prepare_response_socket(self) -> None:
        super()._prepare_response_socket()  # EG's bind rules, port retries and logging
        assert self._response_socket is not None
        self._response_socket.setblocking(False)

    def _start_response_manager(self) -> None:
        if self._response_socket is None:
            self._prepare_response_socket()
        if self._server_task is None:
            # The gateway's loop, which may not run yet: restoring persisted sessions at start-up
            # creates process proxies, and so this manager, before the gateway starts its loop.
            ioloop: Any = IOLoop.current()  # tornado's asyncio wrapper: .asyncio_loop
            self._server_task = ioloop.asyncio_loop.create_task(self._serve())
            self._server_task.add_done_callback(self._serving_ended)

    async def _serve(self) -> None:
        # The socket already listens (EG's _prepare_response_socket), so nothing that connects
        # before this task runs is lost.
        self._server = await asyncio.start_server(
            self._handle_connection, sock=self._response_socket, limit=self.limits.max_bytes
        )

    def _serving_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.log.critical(f"Launch responses cannot be received: {task.exception()}")

    async def _handle_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peername = writer.get_extra_info("peername")
        peer = _normalize_ip(peername[0] if peername else None) or "unknown"
        connection = _Connection(peer, asyncio.current_task())  # type: ignore[arg-type]
        try:
            self._admit(connection)
        except _Refused as refusal:
            writer.transport.abort()
            self.log.warning(f"Launch response connection from {peer} refused: {refusal}")
            return
        try:
            try:
                data = await asyncio.wait_for(self._read_all(reader), self.limits.timeout)
            except asyncio.TimeoutError:
                raise _Refused(
                    f"no complete answer within {self.limits.timeout:g} s; closed"
                ) from None
            except (ConnectionError, OSError) as error:
                raise _Refused(f"connection failed: {error}") from None
            finally:
                writer.transport.abort()  # nothing is ever written back
            loop = asyncio.get_running_loop()
            answer = await loop.run_in_executor(
                self._decoder, _decode_answer, self._private_key, data
            )
            self._post(answer, peer)
        except _Refused as refusal:
            self.log.warning(f"Launch response from {peer} refused: {refusal}")
        except asyncio.CancelledError:
            if not connection.evicted:
                raise
            self.log.warning(
                f"Launch response connection from {peer} closed: "
                f"{self.limits.max_connections} response connections are open"
            )
        finally:
            self._release(connection)

    async def _read_all(self, reader: asyncio.StreamReader) -> bytes:
        """Everything the sender sends until it closes its side, at most ``max_bytes``."""
        data = bytearray()
        while chunk := await reader.read(self.limits.max_bytes + 1 - len(data)):
            data += chunk
            if len(data) > self.limits.max_bytes:
                raise _Refused(f"more than {self.limits.max_bytes} bytes; closed")
        return bytes(data)

    def _admit(self, connection: _Connection) -> None:
        held = self._open.get(connection.peer, [])
        if len(held) >= self.limits.max_per_peer:
            raise _Refused(f"{len(held)} response connections from this address are open")
        if self._open_total >= self.limits.max_connections:
            busiest = max(self._open.values(), key=len)
            # Never an address's only connection: it may carry a kernel's answer.
            if len(busiest) <= max(1, len(held)):
                raise _Refused(
                    f"{self._open_total} response connections are open, and no address holds "
                    f"more than this one"
                )
            victim = busiest[0]
            victim.evicted = True
            victim.task.cancel()
            self._forget(victim)
        self._open.setdefault(connection.peer, held).append(connection)
        self._open_total += 1

    def _release(self, connection: _Connection) -> None:
        if not connection.evicted:
            self._forget(connection)

    def _forget(self, connection: _Connection) -> None:
        held = self._open.get(connection.peer, [])
        if connection in held:
            held.remove(connection)
            self._open_total -= 1
        if not held:
            self._open.pop(connection.peer, None)

    # --- answers held -----------------------------------------------------------------------------

    def _post(self, answer: _Answer, peer: str) -> None:
        kernel_id = answer.kernel_id
        candidates: _Candidates | None = self._response_registry.get(kernel_id)
        if candidates is None:
            raise _Refused(f"kernel id {kernel_id[:40]!r} is not being launched")
        if candidates.expected is not None and peer != candidates.expected:
            raise _Refused(f"kernel '{kernel_id}' runs at {candidates.expected}")
        if peer in candidates.answers:
            raise _Refused(f"a second answer for kernel '{kernel_id}' from the same address")
        if candidates.expected is None:
            if self._held_total >= self.limits.max_answers:
                self._make_room(peer)
            self._held.setdefault(peer, {})[kernel_id] = None
            self._held_total += 1
        candidates.answers[peer] = answer.plain
        candidates.arrived.set()
        self.log.info(f"Launch response for kernel '{kernel_id}' received from {peer}.")

    def _make_room(self, peer: str) -> None:
        """Evict one held answer for ``peer``'s newcomer, never one of an address's only answer."""
        busiest, kernel_ids = max(self._held.items(), key=lambda item: len(item[1]))
        count = len(kernel_ids)
        if count <= max(1, len(self._held.get(peer, ()))):
            raise _Refused(
                f"{self._held_total} answers are held for launches, and no address holds more "
                f"than this one (SANDBOX_RESPONSE_MAX_ANSWERS)"
            )
        victim = next(iter(kernel_ids))
        self._unhold(busiest, victim)
        del self._response_registry[victim].answers[busiest]
        self.log.warning(
            f"Launch response for kernel '{victim}' from {busiest} dropped: "
            f"{self.limits.max_answers} answers are held, {count} of them from {busiest}"
        )

    def _bind(self, kernel_id: str, candidates: _Candidates, expected: str) -> None:
        """From now on ``kernel_id`` takes answers from ``expected`` only; drop the others."""
        for sender in list(candidates.answers):
            if candidates.expected is None:
                self._unhold(sender, kernel_id)  # the kernel's own answer is held uncapped now
            if sender != expected:
                del candidates.answers[sender]
                self.log.warning(
                    f"Launch response for kernel '{kernel_id}' from {sender} ignored: "
                    f"the kernel runs at {expected}."
                )
        candidates.expected = expected

    def _drop(self, kernel_id: str) -> None:
        """Forget ``kernel_id``'s registration and every answer held for it."""
        candidates: _Candidates | None = self._response_registry.pop(kernel_id, None)
        if candidates is not None and candidates.expected is None:
            for sender in candidates.answers:
                self._unhold(sender, kernel_id)

    def _unhold(self, sender: str, kernel_id: str) -> None:
        kernel_ids = self._held.get(sender, {})
        if kernel_id in kernel_ids:
            del kernel_ids[kernel_id]
            self._held_total -= 1
            if not kernel_ids:
                del self._held[sender]


async def _receive_connection_info(self: Any) -> bool:
    """RemoteProcessProxy.receive_connection_info, asking for the answer from the kernel's address.

    Stock EG's method, with ``assigned_ip`` passed to ``get_connection_info``.
    """
    try:
        connect_info = await self.response_manager.get_connection_info(
            self.kernel_id, self.assigned_ip
        )
        self._setup_connection_info(connect_info)
    except asyncio.TimeoutError:
        self.log.debug(
            f"Waiting for KernelID '{self.kernel_id}' to send connection info from host "
            f"'{self.assigned_host}' - retrying..."
        )
        return False
    except Exception as error:
        self.kill()
        self.log_and_raise(
            http_status_code=500,
            reason=(
                f"Exception occurred waiting for connection file response for KernelId "
                f"'{self.kernel_id}' on host '{self.assigned_host}': {error}"
            ),
        )
    return True


def apply() -> None:
    """Replace EG's response handling; a malformed ``SANDBOX_RESPONSE_*`` value ends the gateway."""
    try:
        SandboxResponseManager.limits = ResponseLimits.from_env()
    except ValueError as error:
        # traitlets logs an exception raised by a config file and starts the gateway without the
        # rest of that file, i.e. with EG's stock response path.  SystemExit is not caught there.
        raise SystemExit(f"sandbox_response: {error}") from None
    if processproxy.ResponseManager is SandboxResponseManager:
        return
    # RemoteProcessProxy.__init__ looks the class up in this module at every launch.
    processproxy.ResponseManager = SandboxResponseManager  # type: ignore[misc]
    RemoteProcessProxy.receive_connection_info = _receive_connection_info  # type: ignore[method-assign]

    stock_log_and_raise = RemoteProcessProxy.log_and_raise

    def log_and_raise(
        self: Any, http_status_code: int | None = None, reason: str | None = None
    ) -> None:
        # Every launch failure (timeout, error state, bad answer) ends here: drop the kernel's
        # registration so nothing sent for it later is kept.
        manager = getattr(self, "response_manager", None)
        if isinstance(manager, SandboxResponseManager):
            manager.unregister(self.kernel_id)
        stock_log_and_raise(self, http_status_code, reason)

    RemoteProcessProxy.log_and_raise = log_and_raise  # type: ignore[method-assign]
