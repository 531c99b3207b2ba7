"""The egress process: the proxy's listeners, the kernels' DNS, and a control port on which the
gateway sets the whole table of grants.

The control port takes ``PUT /grants`` (the gateway's token) with every granted kernel, each by
its source address::

    {"10.213.0.18": {"session": "<kernel id>", "allow": "pypi.org,*.pythonhosted.org",
                     "answer": "10.213.0.19"}}

The table replaces the one before: a source that is gone from it is revoked at once (its open
connections end), one whose session changed gets the new list only.  The gateway sends it on
every change and again every few seconds, so a restarted egress process is whole again without
being told.  Every list is checked against this process's own ceiling as well: a grant beyond
it is refused (400) and nothing of the table changes.  ``GET /metrics`` serves the Prometheus
metrics, ``GET /health`` answers ``ok``.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from sandbox_gateway.egress.grants import Grant, Grants
from sandbox_gateway.egress.policy import AllowList, EgressRefused, parse
from sandbox_gateway.egress.proxy import Observer

log = logging.getLogger("sandbox.egress")
MAX_TABLE_BYTES: Final = 4 * 1024 * 1024


class EgressMetrics(Observer):
    """The proxy's observer: decisions by reason, bytes by session (a label removed when the
    session's grant goes, so the series stay as many as the live grants)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.connections = Counter(
            "sandbox_egress_connections",
            "Egress connections and requests, allowed or refused, by reason",
            ["decision", "reason"],
            registry=registry,
        )
        self.bytes = Counter(
            "sandbox_egress_bytes",
            "Bytes relayed for a session, out (to the origin) and in (to the kernel)",
            ["session", "direction"],
            registry=registry,
        )

    def decided(self, decision: str, reason: str) -> None:
        self.connections.labels(decision, reason).inc()

    def moved(self, session: str, direction: str, count: int) -> None:
        self.bytes.labels(session, direction).inc(count)

    def forget(self, session: str) -> None:
        for direction in ("out", "in"):
            with contextlib.suppress(KeyError):  # a session that moved nothing that way
                self.bytes.remove(session, direction)


@dataclass(frozen=True)
class Entry:
    session: str
    allow: AllowList
    answer: str


def parse_table(body: Any, ceiling: AllowList) -> dict[str, Entry]:
    """The table the gateway sent, each list within ``ceiling``; :class:`EgressRefused`
    naming the first entry that is not a grant this process may give."""
    if not isinstance(body, dict):
        raise EgressRefused("the grants must be a JSON object of source address to grant")
    table: dict[str, Entry] = {}
    for source, grant in body.items():
        try:
            address = str(ipaddress.ip_address(source))
            if not isinstance(grant, dict) or set(grant) != {"session", "allow", "answer"}:
                raise ValueError("a grant is {session, allow, answer}")
            session, allow, answer = grant["session"], grant["allow"], grant["answer"]
            if not all(isinstance(value, str) for value in (session, allow, answer)):
                raise ValueError("session, allow and answer are strings")
            if not 0 < len(session) <= 128:
                raise ValueError("session must be 1 to 128 characters")
            answer = str(ipaddress.ip_address(answer))
        except ValueError as exc:
            raise EgressRefused(f"grant for {source!r}: {exc}") from None
        wanted = parse(allow, setting=f"grant for {address}")
        wanted.within(ceiling)
        table[address] = Entry(session, wanted, answer)
    return table


class Control:
    """The control port's handlers, over the proxy's grants."""

    def __init__(
        self, grants: Grants, ceiling: AllowList, token: str, metrics: EgressMetrics
    ) -> None:
        self.grants, self.ceiling, self.metrics = grants, ceiling, metrics
        self._token = token.encode()
        self._table: dict[str, Entry] = {}

    def authorised(self, request: web.Request) -> bool:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() in ("token", "bearer") and hmac.compare_digest(
            given.encode(), self._token
        )

    async def put_grants(self, request: web.Request) -> web.Response:
        if not self.authorised(request):
            return _error(401, "a valid control token is needed")
        if request.content_length is None or request.content_length > MAX_TABLE_BYTES:
            return _error(413, f"the table must have a Content-Length of at most {MAX_TABLE_BYTES}")
        try:
            table = parse_table(json.loads(await request.read()), self.ceiling)
        except (ValueError, EgressRefused) as exc:
            return _error(400, str(exc))
        self.apply(table)
        return web.json_response({"grants": len(table)})

    def apply(self, table: Mapping[str, Entry]) -> None:
        for source, old in list(self._table.items()):
            new = table.get(source)
            if new != old:
                self.grants.revoke(source)
                if new is None or new.session != old.session:
                    self.metrics.forget(old.session)
                log.info("egress: %s revoked (session %s)", source, old.session)
        for source, entry in table.items():
            if self._table.get(source) != entry:
                self.grants.grant(source, Grant(entry.session, entry.allow, entry.answer))
                log.info("egress: %s granted %s (session %s)", source, entry.allow, entry.session)
        self._table = dict(table)

    async def health(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


def control_app(control: Control, registry: CollectorRegistry) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        if not control.authorised(request):
            return _error(401, "a valid control token is needed")
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application(client_max_size=MAX_TABLE_BYTES)
    app.router.add_put("/grants", control.put_grants)
    app.router.add_get("/health", control.health)
    app.router.add_get("/metrics", metrics)
    return app
