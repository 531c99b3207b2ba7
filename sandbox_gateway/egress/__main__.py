"""``python -m sandbox_gateway.egress``: the egress process, configured by its environment.

It listens on ``SANDBOX_EGRESS_LISTEN`` (every address by default): DNS on 53 (UDP and TCP),
HTTP on 80, the proxy port 3128 and TLS on 443 and on every other port the ceiling names; the
control port (``SANDBOX_EGRESS_CONTROL_PORT``) takes the gateway's table of grants.  Its CA
(key and certificate) lives in ``SANDBOX_EGRESS_STATE``; the certificate alone is also written
to ``SANDBOX_EGRESS_PUBLIC_CA`` (a directory), which kernels mount read-only.  A setting that
cannot be read stops it with one line saying which and why.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from sandbox_gateway.egress import dns
from sandbox_gateway.egress.certs import EgressCA, origin_context
from sandbox_gateway.egress.grants import Grants
from sandbox_gateway.egress.policy import AllowList, EgressRefused, parse, resolve_overrides
from sandbox_gateway.egress.proxy import PLAIN_PORTS, EgressProxy
from sandbox_gateway.egress.resolve import Network, Resolver
from sandbox_gateway.egress.service import Control, EgressMetrics, control_app

log = logging.getLogger("sandbox.egress")


class SettingError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    ceiling: AllowList
    upstream: tuple[str, int] | None
    static: dict[str, tuple[str, ...]]
    denied: list[Network]
    origin_ca: str | None
    state: Path
    public_ca: Path | None
    token: str
    listen: str
    control_port: int

    @property
    def tls_ports(self) -> list[int]:
        ports = {443} | {port for entry in self.ceiling.entries for port in entry.ports}
        return sorted(ports - PLAIN_PORTS)


def settings(env: Mapping[str, str]) -> Settings:
    try:
        ceiling = parse(env.get("SANDBOX_EGRESS_ALLOW", ""), setting="SANDBOX_EGRESS_ALLOW")
        static = resolve_overrides(
            env.get("SANDBOX_EGRESS_RESOLVE", ""), setting="SANDBOX_EGRESS_RESOLVE"
        )
    except EgressRefused as exc:
        raise SettingError(str(exc)) from None
    token = env.get("SANDBOX_EGRESS_CONTROL_TOKEN", "")
    if len(token) < 16:
        raise SettingError("SANDBOX_EGRESS_CONTROL_TOKEN must be set, 16 characters or more")
    denied_text = env.get("SANDBOX_EGRESS_DENY") or env.get("SANDBOX_KERNEL_SUBNETS", "")
    try:
        denied = [ipaddress.ip_network(part.strip()) for part in denied_text.split(",") if part]
    except ValueError as exc:
        raise SettingError(f"SANDBOX_EGRESS_DENY: {exc}") from None
    port_text = env.get("SANDBOX_EGRESS_CONTROL_PORT", "8900")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise SettingError(f"SANDBOX_EGRESS_CONTROL_PORT must be a port, got {port_text!r}")
    return Settings(
        ceiling=ceiling,
        upstream=_upstream(env.get("SANDBOX_EGRESS_DNS", "")),
        static=static,
        denied=denied,
        origin_ca=env.get("SANDBOX_EGRESS_ORIGIN_CA") or None,
        state=Path(env.get("SANDBOX_EGRESS_STATE", "/var/lib/sandbox-egress")),
        public_ca=Path(env["SANDBOX_EGRESS_PUBLIC_CA"])
        if env.get("SANDBOX_EGRESS_PUBLIC_CA")
        else None,
        token=token,
        listen=env.get("SANDBOX_EGRESS_LISTEN", "0.0.0.0"),
        control_port=int(port_text),
    )


def _upstream(text: str) -> tuple[str, int] | None:
    if not text.strip():
        return None  # the host's resolver
    host, _, port = text.strip().rpartition(":")
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise SettingError(f"SANDBOX_EGRESS_DNS must be address:port, got {text!r}") from None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise SettingError(f"SANDBOX_EGRESS_DNS must be address:port, got {text!r}")
    return host.strip("[]"), int(port)


async def serve(config: Settings) -> None:
    registry = CollectorRegistry()
    metrics = EgressMetrics(registry)
    grants = Grants()
    resolver = Resolver(upstream=config.upstream, static=config.static, denied=config.denied)
    ca = EgressCA(config.state / "ca")
    if config.public_ca is not None:
        # The certificate alone (never the key), for the kernels' read-only mount.
        config.public_ca.mkdir(parents=True, exist_ok=True)
        published = config.public_ca / "ca.pem"
        staged = config.public_ca / ".ca.pem.new"
        staged.write_bytes(ca.pem)
        staged.chmod(0o644)
        staged.replace(published)
    proxy = EgressProxy(grants, resolver, ca, origin_context(config.origin_ca), metrics)
    host = config.listen
    servers = [await proxy.serve_tls(host, port) for port in config.tls_ports]
    servers.append(await proxy.serve_http(host, 80))
    servers.append(await proxy.serve_proxy(host, 3128))

    def dns_refused(session: str, name: str, reason: str, source: str) -> None:
        metrics.decided("refused", reason)
        # The name as asked, bounded: a query is the kernel's to make up.
        log.warning(
            "egress refused: session=%s source=%s reason=%s: DNS %.255s",
            session or "-",
            source,
            reason,
            name,
        )

    datagrams, stream = await dns.serve(host, 53, grants, dns_refused)
    runner = web.AppRunner(
        control_app(Control(grants, config.ceiling, config.token, metrics), registry)
    )
    await runner.setup()
    await web.TCPSite(runner, host, config.control_port).start()
    log.info(
        "egress: listening on %s (TLS %s, HTTP 80, proxy 3128, DNS 53, control %d); ceiling %s",
        host,
        ",".join(map(str, config.tls_ports)),
        config.control_port,
        config.ceiling or "empty",
    )
    print("egress ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    for server in [*servers, stream]:
        server.close()
    datagrams.close()
    await runner.cleanup()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = settings(os.environ)
    except SettingError as exc:
        sys.exit(f"sandbox egress: invalid setting: {exc}")
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
