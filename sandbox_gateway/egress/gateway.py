"""The gateway's half of egress: what a session may ask for, and the table of grants the egress
process is kept told of.

* **Admission.**  A start request's ``KERNEL_EGRESS_ALLOW`` is parsed and checked against the
  operator's ceiling (``SANDBOX_EGRESS_ALLOW``) before anything starts.  An entry outside it, or
  any list on a gateway without an egress process (``SANDBOX_EGRESS_URL`` unset), refuses the
  start with 403 and an ``egress_refused`` object; nothing is dropped in silence.
* **Grants.**  Every live kernel with a list is granted by its address (the only thing of a
  kernel the egress process can see).  The whole table is sent to the egress process's control
  port (``PUT /grants``): before the start of a kernel with a list answers, so that its first
  request finds its grant (a warm claim too); before the start of any kernel whose address was
  granted to an earlier kernel still in the last table sent, so that no list is inherited with an
  address; as soon as a kernel with a list ends (its revocation); and every
  ``SANDBOX_EGRESS_RESEND`` seconds, so that a restarted egress process is whole again.

The answer a kernel's DNS gives for its allowed names is the egress process's address as that
kernel reaches it: on Docker the fixed address the launcher gives it on each kernel network
(``launchers.docker.egress_address``), on Kubernetes its Service's (``SANDBOX_EGRESS_ANSWER``, an
address or the Service's name: resolved before the first table, and again at every resend, as
the kernel launcher resolves it for each kernel's DNS server).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from sandbox_gateway.egress.policy import (
    HOST_LABEL,
    AllowList,
    EgressRefused,
    parse,
    session_list,
)

log = logging.getLogger("sandbox.egress")
REQUEST_VARIABLE: Final = "KERNEL_EGRESS_ALLOW"
PUT_TIMEOUT: Final = 5.0


class SettingsError(ValueError):
    """An egress setting of the gateway is invalid; the gateway stops with this message."""


@dataclass(frozen=True)
class EgressSettings:
    ceiling: AllowList
    url: str
    token: str
    answer: str
    resend: float

    @property
    def enabled(self) -> bool:
        """Whether sessions can be granted anything: an egress process and a ceiling."""
        return bool(self.url and self.ceiling)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> EgressSettings:
        try:
            ceiling = parse(env.get("SANDBOX_EGRESS_ALLOW", ""), setting="SANDBOX_EGRESS_ALLOW")
        except EgressRefused as exc:
            raise SettingsError(str(exc)) from None
        url = env.get("SANDBOX_EGRESS_URL", "").strip().rstrip("/")
        if url and not url.startswith(("http://", "https://")):
            raise SettingsError(f"SANDBOX_EGRESS_URL must be an http(s) URL, got {url!r}")
        token = env.get("SANDBOX_EGRESS_CONTROL_TOKEN", "")
        if url and len(token) < 16:
            raise SettingsError(
                "SANDBOX_EGRESS_URL needs SANDBOX_EGRESS_CONTROL_TOKEN, 16 characters or more"
            )
        answer = env.get("SANDBOX_EGRESS_ANSWER", "").strip().lower()
        if answer and not (_is_address(answer) or _is_host_name(answer)):
            raise SettingsError(
                f"SANDBOX_EGRESS_ANSWER must be an IP address or a host name, got {answer!r}"
            )
        text = env.get("SANDBOX_EGRESS_RESEND", "").strip() or "5"
        try:
            resend = float(text)
        except ValueError:
            resend = 0.0
        if not 0 < resend <= 3600:
            raise SettingsError(f"SANDBOX_EGRESS_RESEND must be 0 to 3600 seconds, got {text!r}")
        return cls(ceiling, url, token, answer, resend)


def refusal(env: Mapping[str, Any], settings: EgressSettings) -> dict[str, Any] | None:
    """The 403 body for a start request whose list cannot be granted, or None."""
    text = env.get(REQUEST_VARIABLE)
    if not isinstance(text, str) or not text.strip():
        return None  # nothing asked, nothing granted
    try:
        if not settings.url:
            raise EgressRefused(
                f"{REQUEST_VARIABLE} asks for egress, but this gateway has no egress process "
                "(SANDBOX_EGRESS_URL is not set)"
            )
        session_list(text, settings.ceiling, setting=REQUEST_VARIABLE)
    except EgressRefused as exc:
        return {
            "reason": "Forbidden",
            "message": str(exc),
            "egress_refused": {"requested": text, "ceiling": str(settings.ceiling)},
        }
    return None


def _is_host_name(text: str) -> bool:
    """A name of one or more labels: the egress Service's (``normalise_name`` wants two)."""
    return all(HOST_LABEL.fullmatch(label) for label in text.split("."))


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def answer_for(address: str, answer: str) -> str:
    """Where a kernel at ``address`` reaches the egress process: ``answer`` (the resolved
    ``SANDBOX_EGRESS_ANSWER``) or, without one, the Docker launcher's address on its network."""
    if answer:
        return answer
    from sandbox_gateway.launchers.docker import KERNEL_NETWORK_PREFIX, egress_address

    network = ipaddress.IPv4Network(f"{address}/{KERNEL_NETWORK_PREFIX}", strict=False)
    return egress_address(network)


def grant_table(
    kernels: Iterable[tuple[str, str | None, str]], answer: str = ""
) -> dict[str, dict[str, str]]:
    """The table for ``(kernel id, address, list)`` of each kernel with a list: a kernel without
    an address yet (still starting) has none.  ``answer`` as for :func:`answer_for`."""
    table: dict[str, dict[str, str]] = {}
    for kernel_id, address, allow in kernels:
        if not address or not allow:
            continue
        table[address] = {
            "session": kernel_id,
            "allow": allow,
            "answer": answer_for(address, answer),
        }
    return table


class EgressUnavailable(RuntimeError):
    """The egress process did not take the table a start depends on."""


class GrantPublisher:
    """Keeps the egress process's table equal to the gateway's kernels with lists."""

    def __init__(self, settings: EgressSettings, manager: Any) -> None:
        self.settings = settings
        self.manager = manager
        self.lists: dict[str, str] = {}  # kernel id -> the list its start asked for
        self.sent: dict[str, str] = {}  # address -> session, as the egress process last took it
        # SANDBOX_EGRESS_ANSWER's address, once resolved when it is a name.
        self.answer = settings.answer if _is_address(settings.answer) else ""
        self._lock = asyncio.Lock()

    def address(self, kernel_id: str) -> str | None:
        try:
            km = self.manager.get_kernel(kernel_id)
        except KeyError:
            return None
        proxy = getattr(km, "process_proxy", None)
        return getattr(proxy, "assigned_ip", None) or None

    def table(self) -> dict[str, dict[str, str]]:
        live = set(self.manager.list_kernel_ids())
        return grant_table(
            ((kid, self.address(kid), allow) for kid, allow in self.lists.items() if kid in live),
            self.answer,
        )

    async def resolve_answer(self) -> None:
        """Resolve a ``SANDBOX_EGRESS_ANSWER`` that names the egress Service (its address
        changes only if the Service is recreated)."""
        name = self.settings.answer
        if not name or _is_address(name):
            return
        try:
            found = await asyncio.get_running_loop().getaddrinfo(
                name, None, family=socket.AF_INET, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            if self.answer:
                return  # keep the last address: kernels' DNS servers were given it too
            raise EgressUnavailable(
                f"cannot resolve SANDBOX_EGRESS_ANSWER {name!r}: {exc}"
            ) from None
        self.answer = str(found[0][4][0])

    def needs_sync(self, kernel_id: str) -> bool:
        """Whether the start of ``kernel_id`` must wait for a table: it has a list, or its
        address is one the egress process last knew as another session's."""
        if kernel_id in self.lists:
            return True
        address = self.address(kernel_id)
        return address is not None and self.sent.get(address, kernel_id) != kernel_id

    async def sync(self) -> None:
        """Send the table now; raises if the egress process did not take it."""
        async with self._lock:
            if not self.answer:
                await self.resolve_answer()
            table = self.table()
            await self._put(table)
            self.sent = {address: grant["session"] for address, grant in table.items()}

    async def _put(self, table: Mapping[str, Any]) -> None:
        from tornado.httpclient import AsyncHTTPClient, HTTPClientError

        try:
            await AsyncHTTPClient().fetch(
                f"{self.settings.url}/grants",
                method="PUT",
                body=json.dumps(table),
                headers={
                    "Authorization": f"Bearer {self.settings.token}",
                    "Content-Type": "application/json",
                },
                request_timeout=PUT_TIMEOUT,
            )
        except HTTPClientError as exc:
            body = exc.response.body.decode(errors="replace")[:300] if exc.response else ""
            raise EgressUnavailable(
                f"the egress process refused the grants: {exc} {body}"
            ) from None
        except OSError as exc:
            raise EgressUnavailable(f"the egress process is unreachable: {exc}") from None

    async def sync_quietly(self) -> None:
        try:
            await self.sync()
        except Exception as exc:  # the next resend tries again
            log.warning("egress grants not sent (retried in %gs): %s", self.settings.resend, exc)

    async def resend_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resend)
            try:
                await self.resolve_answer()
            except EgressUnavailable as exc:
                log.warning("%s", exc)
            await self.sync_quietly()


_publisher: GrantPublisher | None = None


def publisher() -> GrantPublisher | None:
    """The running gateway's publisher (None: egress is off)."""
    return _publisher


def _refuse_beyond_the_ceiling(settings: EgressSettings) -> None:
    from enterprise_gateway.services.kernels.handlers import MainKernelHandler

    from sandbox_gateway.admission.limits import http_error

    original_post: Callable[..., Any] = MainKernelHandler.post

    async def post(self: Any) -> Any:
        model = self.get_json_body()
        env = model.get("env") if isinstance(model, dict) else None
        body = refusal(env, settings) if isinstance(env, dict) else None
        if body is not None:
            raise http_error(403, body)
        return await original_post(self)

    MainKernelHandler.post = post  # type: ignore[method-assign]


def _grant_at_start_and_revoke_at_end(settings: EgressSettings) -> None:
    from enterprise_gateway.enterprisegatewayapp import EnterpriseGatewayApp
    from enterprise_gateway.services.kernels.remotemanager import RemoteMappingKernelManager
    from tornado.ioloop import IOLoop

    from sandbox_gateway.admission.limits import http_error

    original_start = RemoteMappingKernelManager.start_kernel
    original_remove = RemoteMappingKernelManager.remove_kernel
    original_restart = RemoteMappingKernelManager.restart_kernel
    original_app_start = EnterpriseGatewayApp.start

    async def start_kernel(self: Any, *args: Any, **kwargs: Any) -> str:
        allow = str((kwargs.get("env") or {}).get(REQUEST_VARIABLE, "")).strip()
        kernel_id: str = await original_start(self, *args, **kwargs)
        if _publisher is None:
            return kernel_id
        if allow:
            # Normalised: the egress process parses it again, against its own ceiling.
            _publisher.lists[kernel_id] = str(parse(allow, setting=REQUEST_VARIABLE))
        if _publisher.needs_sync(kernel_id):
            try:
                await _publisher.sync()
            except EgressUnavailable as exc:
                # The session asked for egress it would not get: it does not start.
                _publisher.lists.pop(kernel_id, None)
                await self.shutdown_kernel(kernel_id, now=True)
                raise http_error(
                    503, {"reason": "Service Unavailable", "message": f"not started: {exc}"}
                ) from None
        return kernel_id

    def remove_kernel(self: Any, kernel_id: str) -> None:
        original_remove(self, kernel_id)
        if _publisher is not None and _publisher.lists.pop(kernel_id, None) is not None:
            IOLoop.current().add_callback(_publisher.sync_quietly)  # revoked at once

    async def restart_kernel(self: Any, kernel_id: str, *args: Any, **kwargs: Any) -> None:
        await original_restart(self, kernel_id, *args, **kwargs)
        if _publisher is not None and kernel_id in _publisher.lists:
            await _publisher.sync_quietly()  # the new container has a new address

    def app_start(self: Any) -> None:
        global _publisher
        _publisher = GrantPublisher(settings, self.kernel_manager)
        # Whatever an earlier gateway granted is revoked: its lists are not persisted.
        IOLoop.current().add_callback(_publisher.sync_quietly)
        IOLoop.current().add_callback(_publisher.resend_forever)
        original_app_start(self)

    RemoteMappingKernelManager.start_kernel = start_kernel  # type: ignore[method-assign]
    RemoteMappingKernelManager.remove_kernel = remove_kernel  # type: ignore[method-assign]
    RemoteMappingKernelManager.restart_kernel = restart_kernel  # type: ignore[method-assign]
    EnterpriseGatewayApp.start = app_start  # type: ignore[method-assign]


def apply(env: Mapping[str, str] | None = None) -> EgressSettings:
    """Read the settings (exit with a message if one is invalid) and patch the gateway: after
    the pool, so that a warm claim is granted too."""
    try:
        settings = EgressSettings.from_env(os.environ if env is None else env)
    except SettingsError as exc:
        raise SystemExit(f"sandbox gateway: invalid setting: {exc}") from None
    _refuse_beyond_the_ceiling(settings)
    if settings.enabled:
        _grant_at_start_and_revoke_at_end(settings)
    return settings
