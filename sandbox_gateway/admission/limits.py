"""Kernel-count limits and start-request validation for Enterprise Gateway 3.3.

Loaded by the gateway's config file (``apply()``), like ``http.patches``.

Kernel limits
    ``SANDBOX_MAX_KERNELS`` caps the kernels of the whole gateway, ``SANDBOX_MAX_KERNELS_PER_USER``
    those of one ``KERNEL_USERNAME`` (a request without one counts as the gateway's default user,
    the one Enterprise Gateway itself falls back to).  Both are whole numbers >= 1.

    * Default total: ``floor(MemTotal * HOST_MEMORY_FRACTION / footprint)``, at least 1, where
      the footprint is ``KERNEL_FOOTPRINT`` (128 MiB: twice the 57 to 67 MiB an idle Python
      kernel was measured to use) or the kernel's memory limit ``SANDBOX_KERNEL_MEMORY`` if that
      is smaller.  ``MemTotal`` comes from ``/proc/meminfo`` (in a container, that is the host's
      memory, which is what the kernel containers share); ``SANDBOX_KERNEL_MEMORY`` (default
      ``512m``, Docker's size syntax: ``b``, ``k``, ``m``, ``g``, powers of 1024, as the launcher
      reads it).  ``HOST_MEMORY_FRACTION`` leaves a quarter of the host to the gateway, the
      notebook, the file server and the OS.  In Kubernetes, where kernels run on other nodes than
      the gateway, set ``SANDBOX_MAX_KERNELS`` explicitly.
    * Default per user: the total, i.e. no separate per-user cap unless one is set.

    Memory is overcommitted: the cap counts a kernel at its footprint, not its limit (on 24 GiB,
    144 kernels of 512 MiB each may grow to 72 GiB).  Two things stand between that and the
    gateway.  A start, warm or cold, is refused while the host's ``MemAvailable`` is below
    ``SANDBOX_MEMORY_RESERVE`` (default: the larger of 5 % of ``MemTotal`` and one kernel's limit;
    ``0`` turns the check off), so a host running short stops taking kernels before the OOM
    killer has to choose; and the Docker launcher gives each kernel container the highest OOM
    score (1000; a kernel cannot bring its own below the services' 0), so that when it must
    choose, it prefers a kernel to a service.

    A kernel holds its slot from the moment its start request is accepted (a slot is reserved
    before the launch, so concurrent starts cannot overshoot) until it is gone from the gateway's
    kernel map, whatever removed it (shutdown, culling, death); a launch that fails gives its slot
    back.  Past either limit ``POST /api/kernels`` answers **403** with a plain reason and a
    ``kernel_limit`` object, and nothing is started.  403 rather than 429: 429 means "too many
    requests, slow down", and clients (this project's among them) retry it with backoff, but a
    quota does not free up by waiting a few seconds — only by shutting a kernel down — so the
    answer must be final, and it matches the 403 that stock Enterprise Gateway gives for its own
    ``max_kernels``.

Start-request validation (400 with a plain reason, nothing started)
    ``env`` must be an object of string -> string whose names are portable variable names
    (``ENV_NAME_PATTERN``; a ``KERNEL_*`` name in upper case, the only ones a kernel is given)
    and whose values hold no NUL and are valid Unicode (no lone surrogate): anything else cannot
    become a process environment, and stock EG let it fail inside the launch or, worse, inside a
    pooled kernel's claim.  ``KERNEL_ID``, if present, a version-4 UUID in
    canonical form (what Enterprise Gateway accepts); ``KERNEL_USERNAME``, if present, a sane name
    (``USERNAME_PATTERN``); ``KERNEL_LAUNCH_TIMEOUT``, if present, a finite number > 0, which is
    then clamped to ``[MIN_LAUNCH_TIMEOUT, SANDBOX_MAX_LAUNCH_TIMEOUT]`` (default 300 s, at most
    ``LAUNCH_TIMEOUT_CEILING``).  Stock EG answered a malformed id or timeout with a 500, and took
    ``inf`` as a launch that may wait forever.

One start per kernel id
    A ``KERNEL_ID`` already in the gateway's map, or named by a start still in progress, answers
    **409** before anything starts, and the id stays held until that start has ended.  Stock EG
    checked only the map, so concurrent starts with one id all launched: each took a slot it did
    not count, and on Docker each put a container on the same private network (one client could
    join a victim's network while the victim's kernel was starting).

What the launcher would refuse (403, nothing started)
    A request the kernelspec's launcher would refuse on its values alone is refused before the
    launch (``launch_refusal``): on Kubernetes a size above the chart's maximum, zero, or not a
    quantity; on Docker a ``KERNEL_IMAGE`` that is not allowed.  Enterprise Gateway answers a
    launcher's refusal with a 500, which clients (the SandboxSession controller among them) must
    take for a passing fault and retry for ever; the same words in a 403 are final.

Unknown kernels
    ``POST /api/kernels/<id>/restart`` (and ``interrupt``) for an id the gateway does not have
    answers 404 with a plain reason; stock EG answered a restart with a 500 and a traceback.

Bad settings stop the gateway with a message (``SystemExit``): traitlets would otherwise log an
exception raised by a config file and start the gateway without any of its configuration.
"""

from __future__ import annotations

import contextvars
import json
import math
import os
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sandbox_gateway.launchers import rules
from sandbox_gateway.launchers.rules import DEFAULT_KERNEL_MEMORY, MIN_KERNEL_MEMORY

HOST_MEMORY_FRACTION: Final = 0.75
KERNEL_FOOTPRINT: Final = 128 * 1024**2
MEMORY_RESERVE_FRACTION: Final = 0.05
DEFAULT_MAX_LAUNCH_TIMEOUT: Final = 300.0
MIN_LAUNCH_TIMEOUT: Final = 1.0
# proxies.docker keeps a young kernel network for 600 s as "a launch may still be using it": no
# launch may be allowed to take longer than that.
LAUNCH_TIMEOUT_CEILING: Final = 600.0
USERNAME_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
ENV_NAME_PATTERN: Final = re.compile(
    r"(?!KERNEL_)[A-Za-z_][A-Za-z0-9_]{0,127}|KERNEL_[A-Z0-9_]{1,120}"
)
MAX_ENV_VALUE: Final = 32 * 1024
"""Characters of one ``env`` value (Linux takes up to 128 KiB per variable; no kernel setting
comes near 32 KiB, and a start request is no way to ship data into a kernel)."""
MEMINFO: Final = "/proc/meminfo"


class SettingsError(ValueError):
    """A SANDBOX_* setting of the gateway is invalid."""


class RequestRefused(ValueError):
    """A start request is malformed; the message is the plain reason returned with the 400."""


# --- settings ----------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """'512m' -> bytes, in Docker's syntax: ``launchers.rules.parse_size``, the launcher's own
    reading of the same variables, with its refusal as a :class:`SettingsError`."""
    try:
        return rules.parse_size(text)
    except rules.RuleError as exc:
        raise SettingsError(str(exc)) from None


def size_setting(env: Mapping[str, str], name: str, default: str) -> tuple[int, str]:
    """Setting ``name`` of ``env`` (``default`` when unset) in bytes, and the text it was read
    from; a malformed value raises :class:`SettingsError` naming the setting."""
    text = env.get(name, "").strip() or default
    try:
        return parse_size(text), text
    except SettingsError as exc:
        raise SettingsError(f"{name}: {exc}") from None


def host_memory_bytes(meminfo: str = MEMINFO, name: str = "MemTotal") -> int:
    """``name`` (``MemTotal``, ``MemAvailable``) of ``/proc/meminfo`` in bytes."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith(f"{name}:"):
                    value, unit = line.split()[1:3]
                    if unit.lower() != "kb":
                        break
                    return int(value) * 1024
    except (OSError, ValueError) as exc:
        raise SettingsError(
            f"cannot read the host's memory from {meminfo} ({exc}); set SANDBOX_MAX_KERNELS "
            "and SANDBOX_MEMORY_RESERVE=0"
        ) from exc
    raise SettingsError(
        f"no {name} in kB in {meminfo}; set SANDBOX_MAX_KERNELS and SANDBOX_MEMORY_RESERVE=0"
    )


def _positive_int(env: Mapping[str, str], name: str) -> int | None:
    text = env.get(name, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise SettingsError(f"{name} must be a whole number >= 1, got {text!r}")
    return value


@dataclass(frozen=True)
class LimitSettings:
    """The gateway's limits, each checked once at start-up."""

    max_kernels: int
    """Kernels on the whole gateway, starting ones included."""
    max_kernels_per_user: int
    """Kernels of one KERNEL_USERNAME, starting ones included."""
    max_launch_timeout: float
    """Upper bound of a client's KERNEL_LAUNCH_TIMEOUT, in seconds."""
    memory_reserve: int = 0
    """Bytes of the host's MemAvailable below which starts are refused; 0: never."""
    meminfo: str = MEMINFO

    @classmethod
    def from_env(cls, env: Mapping[str, str], meminfo: str = MEMINFO) -> LimitSettings:
        # Checked whether or not it sizes the default: a bad value is refused at start-up.
        kernel_memory, memory_text = size_setting(
            env, "SANDBOX_KERNEL_MEMORY", DEFAULT_KERNEL_MEMORY
        )
        if kernel_memory < MIN_KERNEL_MEMORY:
            raise SettingsError(f"SANDBOX_KERNEL_MEMORY must be at least 64m, got {memory_text!r}")
        max_kernels = _positive_int(env, "SANDBOX_MAX_KERNELS")
        reserve_text = env.get("SANDBOX_MEMORY_RESERVE", "").strip()
        # Read only when a default needs it: both settings given, the host's memory is not.
        host = host_memory_bytes(meminfo) if max_kernels is None or not reserve_text else 0
        if max_kernels is None:
            footprint = min(KERNEL_FOOTPRINT, kernel_memory)
            max_kernels = max(1, math.floor(host * HOST_MEMORY_FRACTION / footprint))
        if reserve_text:
            reserve, _ = size_setting(env, "SANDBOX_MEMORY_RESERVE", reserve_text)
        else:
            reserve = max(kernel_memory, math.floor(host * MEMORY_RESERVE_FRACTION))
        if reserve:
            host_memory_bytes(meminfo, "MemAvailable")  # readable now, or no start could be
        per_user = _positive_int(env, "SANDBOX_MAX_KERNELS_PER_USER") or max_kernels
        timeout_text = env.get("SANDBOX_MAX_LAUNCH_TIMEOUT", "").strip()
        max_launch_timeout = DEFAULT_MAX_LAUNCH_TIMEOUT
        if timeout_text:
            try:
                max_launch_timeout = float(timeout_text)
            except ValueError:
                max_launch_timeout = math.nan
            if not MIN_LAUNCH_TIMEOUT <= max_launch_timeout <= LAUNCH_TIMEOUT_CEILING:
                raise SettingsError(
                    f"SANDBOX_MAX_LAUNCH_TIMEOUT must be a number of seconds between "
                    f"{MIN_LAUNCH_TIMEOUT:g} and {LAUNCH_TIMEOUT_CEILING:g}, got {timeout_text!r}"
                )
        return cls(max_kernels, per_user, max_launch_timeout, reserve, meminfo)


# --- start requests ----------------------------------------------------------------------------


def _shown(value: str) -> str:
    """A client's value as echoed in a reason: quoted, and never long."""
    return repr(value if len(value) <= 60 else value[:60] + "...")


def check_start_request(model: Any, settings: LimitSettings) -> dict[str, Any] | None:
    """Validate the body of ``POST /api/kernels``.

    Returns the body to use instead when ``KERNEL_LAUNCH_TIMEOUT`` had to be clamped, else
    ``None``.  Raises :class:`RequestRefused` with the reason for the client.
    """
    if not isinstance(model, dict) or "env" not in model:
        return None  # the shape of the body itself is http.patches' check
    env = model["env"]
    if not isinstance(env, dict):
        raise RequestRefused("env must be a JSON object of strings")
    for key, value in env.items():
        if not isinstance(value, str):
            raise RequestRefused(f"env[{_shown(key)}] must be a string, not {type(value).__name__}")
        _check_env_item(key, value)
    kernel_id = env.get("KERNEL_ID")
    if kernel_id is not None and not _is_canonical_uuid4(kernel_id):
        raise RequestRefused(
            f"KERNEL_ID must be a version-4 UUID in canonical form "
            f"(like {uuid.UUID(int=0x1B4E28BA2FA14D3BA3F5EF19B5A7633B)}), got {_shown(kernel_id)}"
        )
    username = env.get("KERNEL_USERNAME")
    if username is not None and not USERNAME_PATTERN.fullmatch(username):
        raise RequestRefused(
            "KERNEL_USERNAME must be 1 to 64 characters of letters, digits and . _ @ -, "
            f"starting with a letter or digit; got {_shown(username)}"
        )
    timeout_text = env.get("KERNEL_LAUNCH_TIMEOUT")
    if timeout_text is None:
        return None
    try:
        timeout = float(timeout_text)
    except ValueError:
        timeout = math.nan
    if not (math.isfinite(timeout) and timeout > 0):
        raise RequestRefused(
            "KERNEL_LAUNCH_TIMEOUT must be a finite number of seconds > 0, "
            f"got {_shown(timeout_text)}"
        )
    clamped = min(max(timeout, MIN_LAUNCH_TIMEOUT), settings.max_launch_timeout)
    if clamped == timeout and timeout_text == f"{timeout:g}":
        return None
    return {**model, "env": {**env, "KERNEL_LAUNCH_TIMEOUT": f"{clamped:g}"}}


def _check_env_item(name: str, value: str) -> None:
    if not ENV_NAME_PATTERN.fullmatch(name):
        raise RequestRefused(
            f"env name {_shown(name)} is not a variable name: letters, digits and _, not starting "
            "with a digit, at most 128 characters (KERNEL_* names in upper case)"
        )
    if "\0" in value:
        raise RequestRefused(f"env[{_shown(name)}] contains a NUL character")
    if len(value) > MAX_ENV_VALUE:
        raise RequestRefused(f"env[{_shown(name)}] is longer than {MAX_ENV_VALUE} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestRefused(
            f"env[{_shown(name)}] is not valid Unicode (a lone surrogate)"
        ) from None


def _is_canonical_uuid4(value: str) -> bool:
    # Enterprise Gateway's own test (remotemanager.new_kernel_id), which answers a failure with 500.
    try:
        return str(uuid.UUID(value, version=4)) == value
    except ValueError:
        return False


# --- kernel slots ------------------------------------------------------------------------------


class KernelIdInUse(Exception):
    """A start names a kernel id that exists or is being started."""


class KernelLimitReached(Exception):
    """A start would exceed a limit; carries the plain reason and the figures."""

    def __init__(self, scope: str, limit: int, in_use: int, user: str | None = None) -> None:
        if scope == "total":
            reason = f"kernel limit reached: {in_use} of {limit} kernels in use"
        else:
            reason = (
                f"per-user kernel limit reached: {in_use} of {limit} kernels in use "
                f"for user {user!r}"
            )
        super().__init__(reason)
        self.reason = reason
        self.scope = scope
        self.limit = limit
        self.in_use = in_use
        self.user = user

    def body(self) -> dict[str, Any]:
        """The JSON answer: EG's error shape (reason, message) plus the figures."""
        figures: dict[str, Any] = {"scope": self.scope, "limit": self.limit, "in_use": self.in_use}
        if self.user is not None:
            figures["user"] = self.user
        return {
            "reason": self.reason,
            "message": "shut a kernel down (idle kernels are also culled) and try again",
            "kernel_limit": figures,
        }


class HostMemoryLow(KernelLimitReached):
    """A start while the host's available memory is below the reserve
    (``SANDBOX_MEMORY_RESERVE``)."""

    def __init__(self, available: int, reserve: int) -> None:
        mib = 1024**2
        reason = (
            f"host memory low: {available // mib} MiB available, below the "
            f"{reserve // mib} MiB kept in reserve"
        )
        Exception.__init__(self, reason)
        self.reason = reason
        self.scope = "memory"
        self.available = available
        self.reserve = reserve
        self.user = None

    def body(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "message": "shut a kernel down (idle kernels are also culled) and try again",
            "kernel_limit": {
                "scope": "memory",
                "available_bytes": self.available,
                "reserve_bytes": self.reserve,
            },
        }


@dataclass(eq=False)
class Reservation:
    """A slot held by one start request; ``kernel_id`` is known once the launch has chosen it."""

    user: str
    kernel_id: str | None = None


@dataclass(frozen=True)
class Usage:
    """Kernel slots in use against the caps (:meth:`KernelLedger.usage`)."""

    user: int
    user_limit: int
    total: int
    total_limit: int


def _count(user: str, kernels: Mapping[object, str | None]) -> int:
    return sum(1 for owner in kernels.values() if owner == user)


@dataclass
class KernelLedger:
    """Who holds which slot.

    The gateway's kernel map is the truth about which kernels exist: every count starts from it,
    so a kernel that left the map by any path (shutdown, culling, death) has freed its slot.  The
    ledger adds what the map does not know: starts still in progress (:class:`Reservation`) and the
    user of each kernel.  A kernel that is both starting and already in the map counts once.
    """

    settings: LimitSettings
    starting: list[Reservation] = field(default_factory=list)
    users: dict[str, str] = field(default_factory=dict)
    user_limits: dict[str, int] = field(default_factory=dict)
    """Per-user caps that differ from ``max_kernels_per_user`` (a tenant's ``max_kernels``)."""
    held_ids: set[str] = field(default_factory=set)
    """Kernel ids named by start requests in progress (see :meth:`hold_id`)."""

    def hold_id(self, kernel_id: str, live: set[str]) -> None:
        """Keep ``kernel_id`` for one start request, or raise :class:`KernelIdInUse` when a
        kernel has it or another start holds it.  Synchronous: of concurrent starts with one
        id, exactly one gets it."""
        if kernel_id in live or kernel_id in self.held_ids:
            raise KernelIdInUse(kernel_id)
        self.held_ids.add(kernel_id)

    def drop_id(self, kernel_id: str) -> None:
        """The start that held ``kernel_id`` ended: from now on the kernel map alone tells."""
        self.held_ids.discard(kernel_id)

    def reserve(self, user: str, live: set[str], *, per_user: bool = True) -> Reservation:
        """Take a slot for a start by ``user``, or raise :class:`KernelLimitReached` (a cap) or
        :class:`HostMemoryLow`.

        Synchronous, so two concurrent requests never both see the last free slot.  The warm
        pool reserves with ``per_user=False``: its kernels count against the total only, until
        :meth:`hand_over` gives one to a user.
        """
        kernels = self._kernels(live)
        if len(kernels) >= self.settings.max_kernels:
            raise KernelLimitReached("total", self.settings.max_kernels, len(kernels))
        if per_user:
            self._check_user(user, kernels)
        self._check_memory()
        reservation = Reservation(user)
        self.starting.append(reservation)
        return reservation

    def hand_over(self, reservation: Reservation, user: str, live: set[str]) -> None:
        """A pooled kernel's slot passes to ``user``: the total is unchanged, the user's count
        grows by one (or :class:`KernelLimitReached`, and nothing changes)."""
        self._check_user(user, self._kernels(live))
        self._check_memory()  # the claimed kernel is a new one to its user, and will grow
        reservation.user = user
        if reservation.kernel_id is not None:
            self.users[reservation.kernel_id] = user

    def usage(self, user: str, live: set[str]) -> Usage:
        """The slots in use, ``user``'s and the gateway's, and the caps they meet: the figures
        :meth:`reserve` compares (pooled kernels and starts in progress included)."""
        kernels = self._kernels(live)
        return Usage(
            user=_count(user, kernels),
            user_limit=self.user_limit(user),
            total=len(kernels),
            total_limit=self.settings.max_kernels,
        )

    def user_limit(self, user: str) -> int:
        """The cap on ``user``'s kernels: a tenant's ``max_kernels``, else the per-user one."""
        return self.user_limits.get(user, self.settings.max_kernels_per_user)

    def _check_memory(self) -> None:
        reserve = self.settings.memory_reserve
        if reserve:
            available = host_memory_bytes(self.settings.meminfo, "MemAvailable")
            if available < reserve:
                raise HostMemoryLow(available, reserve)

    def _check_user(self, user: str, kernels: dict[object, str | None]) -> None:
        mine = _count(user, kernels)
        limit = self.user_limit(user)
        if mine >= limit:
            raise KernelLimitReached("user", limit, mine, user)

    def named(self, reservation: Reservation, kernel_id: str) -> None:
        """The launch chose ``kernel_id``; a kernel that already exists keeps its owner."""
        reservation.kernel_id = kernel_id
        self.users.setdefault(kernel_id, reservation.user)

    def release(self, reservation: Reservation) -> None:
        """The start ended (either way): from now on the kernel map alone tells."""
        if reservation in self.starting:
            self.starting.remove(reservation)

    def adopt(self, kernel_id: str, user: str) -> None:
        """A kernel the gateway re-attached to at start-up (persisted session)."""
        self.users[kernel_id] = user

    def _kernels(self, live: set[str]) -> dict[object, str | None]:
        """Every slot in use, by kernel id (or reservation, before it has one) -> user."""
        named = {r.kernel_id for r in self.starting if r.kernel_id is not None}
        present = live | named
        for kernel_id in [k for k in self.users if k not in present]:
            del self.users[kernel_id]  # gone: forget its owner
        slots: dict[object, str | None] = {k: self.users.get(k) for k in present}
        slots.update({r: r.user for r in self.starting if r.kernel_id is None})
        return slots


# --- Enterprise Gateway patches ------------------------------------------------------------------

LEDGER: KernelLedger | None = None
"""The gateway's ledger once :func:`apply` ran (the warm pool holds its slots there too)."""

_current_reservation: contextvars.ContextVar[Reservation | None] = contextvars.ContextVar(
    "sandbox_kernel_reservation", default=None
)


def _limit_kernels(ledger: KernelLedger) -> None:
    from enterprise_gateway.services.kernels.remotemanager import RemoteMappingKernelManager
    from enterprise_gateway.services.sessions.kernelsessionmanager import KernelSessionManager

    original_start = RemoteMappingKernelManager.start_kernel
    original_new_id = RemoteMappingKernelManager.new_kernel_id
    original_from_session = RemoteMappingKernelManager.start_kernel_from_session

    async def start_kernel(self: Any, *args: Any, **kwargs: Any) -> str:
        # The same user EG authorises and records (its default user when the request names none).
        user = KernelSessionManager.get_kernel_username(**kwargs)
        try:
            reservation = ledger.reserve(user, set(self.list_kernel_ids()))
        except KernelLimitReached as exc:
            raise limit_refusal(exc) from None
        token = _current_reservation.set(reservation)
        try:
            kernel_id: str = await original_start(self, *args, **kwargs)
        finally:
            _current_reservation.reset(token)
            ledger.release(reservation)
        ledger.named(reservation, kernel_id)  # already, unless new_kernel_id was bypassed
        return kernel_id

    def new_kernel_id(self: Any, **kwargs: Any) -> str:
        # Called by jupyter_client's pre_start_kernel, inside the start above (same context).
        kernel_id: str = original_new_id(self, **kwargs)
        reservation = _current_reservation.get()
        if reservation is not None:
            ledger.named(reservation, kernel_id)
        return kernel_id

    def start_kernel_from_session(self: Any, kernel_id: str, *args: Any, **kwargs: Any) -> Any:
        revived = original_from_session(self, kernel_id, *args, **kwargs)
        if revived:
            launch_args = kwargs.get("launch_args", args[3] if len(args) > 3 else {}) or {}
            # A copy: get_kernel_username fills in the default user, and this is persisted state.
            env = dict(launch_args.get("env") or {})
            ledger.adopt(kernel_id, KernelSessionManager.get_kernel_username(env=env))
        return revived

    RemoteMappingKernelManager.start_kernel = start_kernel  # type: ignore[method-assign]
    RemoteMappingKernelManager.new_kernel_id = new_kernel_id  # type: ignore[method-assign]
    RemoteMappingKernelManager.start_kernel_from_session = start_kernel_from_session  # type: ignore[method-assign]


def limit_refusal(exc: KernelLimitReached) -> Exception:
    """The 403 answer to a start past a kernel limit (what the warm pool raises too)."""
    return http_error(403, exc.body())


def http_error(status: int, body: dict[str, Any]) -> Exception:
    """A tornado HTTPError whose JSON answer is ``body``, written as is by ``write_error``.

    An HTTPError, so tornado logs one warning line, not an "uncaught exception".  The text goes
    in as an argument, never as the format: a client's value may hold a ``%``.
    """
    from tornado import web

    error = web.HTTPError(status, "%s", f"{body['reason']}: {body['message']}")
    error.sandbox_body = body  # type: ignore[attr-defined]
    return error


def _answer_plainly() -> None:
    from enterprise_gateway.mixins import JSONErrorsMixin

    original = JSONErrorsMixin.write_error

    def write_error(self: Any, status_code: int, **kwargs: Any) -> Any:
        exc_info = kwargs.get("exc_info")
        body = getattr(exc_info[1] if exc_info else None, "sandbox_body", None)
        if not isinstance(body, dict):
            return original(self, status_code, **kwargs)
        # EG's writer would put the format ("%s") where the message belongs.
        self.set_header("Content-Type", "application/json")
        self.set_status(status_code)
        self.finish(json.dumps(body))
        return None

    JSONErrorsMixin.write_error = write_error  # type: ignore[method-assign]


def _validate_start_requests(ledger: KernelLedger) -> None:
    from enterprise_gateway.services.kernels.handlers import MainKernelHandler

    original_post: Callable[..., Any] = MainKernelHandler.post

    async def post(self: Any) -> Any:
        model = self.get_json_body()  # malformed JSON is already a 400 here
        try:
            replacement = check_start_request(model, ledger.settings)
        except RequestRefused as exc:
            raise http_error(400, {"reason": "Bad Request", "message": str(exc)}) from None
        if replacement is not None:
            # Enterprise Gateway reads KERNEL_LAUNCH_TIMEOUT from the body (twice): give it the
            # clamped value there.
            self.request.body = json.dumps(replacement).encode()
        refusal = _launch_refusal_of(self, model)
        if refusal is not None:
            raise http_error(403, {"reason": "Forbidden", "message": refusal})
        kernel_id = requested_kernel_id(model)
        if kernel_id is None:
            return await original_post(self)
        try:
            ledger.hold_id(kernel_id, set(self.kernel_manager.list_kernel_ids()))
        except KernelIdInUse:
            raise http_error(
                409,
                {
                    "reason": "Conflict",
                    "message": f"a kernel with id {kernel_id} exists or is starting; "
                    "omit KERNEL_ID to get a fresh one",
                },
            ) from None
        try:
            return await original_post(self)
        finally:
            ledger.drop_id(kernel_id)

    MainKernelHandler.post = post  # type: ignore[method-assign]


JUDGED_BY_LAUNCHERS: Final = ("KERNEL_IMAGE", "KERNEL_CPUS", "KERNEL_MEMORY")
"""The request variables ``launch_refusal`` judges; a request with none of them passes it."""


def launch_refusal(
    argv: Sequence[str], env: Mapping[str, str], gateway_env: Mapping[str, str]
) -> str | None:
    """Why the launcher in a kernelspec's ``argv`` would refuse a start request's ``env``, or
    None.  Only the launchers' own rules decide: they are called here, not copied."""
    launcher = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else ""
    if launcher == "sandbox_gateway.launchers.kubernetes":
        from sandbox_gateway.launchers import kubernetes

        cpu, memory = _option(argv, "--max-cpu"), _option(argv, "--max-memory")
        if cpu is None or memory is None:
            return None  # the launcher refuses such a kernelspec itself, for every request
        try:
            kubernetes.kernel_size(env, {"cpu": cpu, "memory": memory})
        except kubernetes.LaunchError as exc:
            return str(exc)
    elif launcher == "sandbox_gateway.launchers.docker":
        from sandbox_gateway.launchers import docker

        image = env.get("KERNEL_IMAGE")
        if image and image not in docker.allowed_images(gateway_env, _option(argv, "--image")):
            return f"image {image!r} is not allowed (SANDBOX_ALLOWED_KERNEL_IMAGES)"
    return None


def _option(argv: Sequence[str], name: str) -> str | None:
    for at, word in enumerate(argv[:-1]):
        if word == name:
            return argv[at + 1]
    return None


def _launch_refusal_of(handler: Any, model: Any) -> str | None:
    if not isinstance(model, dict):
        return None
    env = model.get("env") or {}
    if not any(name.startswith(JUDGED_BY_LAUNCHERS) for name in env):
        return None  # nothing to judge: no kernelspec read on the (warm) start's path
    name = model.get("name") or handler.kernel_manager.default_kernel_name
    try:
        argv = handler.kernel_spec_manager.get_kernel_spec(name).argv
    except Exception:  # an unknown kernelspec: Enterprise Gateway answers it (404)
        return None
    return launch_refusal(argv, env, os.environ)


def requested_kernel_id(model: Any) -> str | None:
    """The ``KERNEL_ID`` of a start request's body that passed :func:`check_start_request`."""
    env = model.get("env") if isinstance(model, dict) else None
    kernel_id = env.get("KERNEL_ID") if isinstance(env, dict) else None
    return kernel_id if isinstance(kernel_id, str) else None


def _unknown_kernels_are_404() -> None:
    from enterprise_gateway.services.kernels import handlers

    action_handler = next(
        cls for _, cls in handlers.default_handlers if cls.__name__ == "KernelActionHandler"
    )
    original_post = action_handler.post

    async def post(self: Any, kernel_id: str, action: str) -> Any:
        # jupyter_server's restart handler turns any exception, KeyError for an unknown id
        # included, into a 500 carrying the traceback.
        self.kernel_manager.check_kernel_id(kernel_id)  # 404 "Kernel does not exist: <id>"
        return await original_post(self, kernel_id, action)

    action_handler.post = post


def apply(env: Mapping[str, str] | None = None) -> LimitSettings:
    """Read the settings (exit with a message if one is invalid) and patch the gateway."""
    try:
        settings = LimitSettings.from_env(os.environ if env is None else env)
    except SettingsError as exc:
        raise SystemExit(f"sandbox gateway: invalid setting: {exc}") from None
    global LEDGER
    LEDGER = KernelLedger(settings)
    _limit_kernels(LEDGER)
    _answer_plainly()
    _validate_start_requests(LEDGER)
    _unknown_kernels_are_404()
    return settings
