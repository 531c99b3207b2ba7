"""The controller's gateway client: the client package's protocol core, run over aiohttp.

The controller needs the gateway's REST API only (start, inspect, list, shut down kernels), so it
runs the core's public flows (:mod:`jupyter_kernel_client.protocol`: ``start_flow`` and friends)
with :func:`~jupyter_kernel_client.protocol.run_flow_async`, exactly as the async session does:
URLs, request bodies (``KERNEL_USERNAME``), unknown-kernel-name detection and the mapping of
gateway answers to exceptions are written once, in the client.  Where the gateway is and how
patiently to talk to it is the client's :class:`~jupyter_kernel_client.GatewayConfig`.

Errors are the client's: :class:`~jupyter_kernel_client.TransportError` (gateway unreachable),
:class:`~jupyter_kernel_client.GatewayError` (5xx),
:class:`~jupyter_kernel_client.GatewayRefusedError` (4xx) and its
:class:`~jupyter_kernel_client.UnknownKernelNameError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from types import TracebackType
from typing import Any

import aiohttp

from jupyter_kernel_client import GatewayConfig, GatewayError, GatewayRefusedError
from jupyter_kernel_client import protocol as proto


@dataclass(frozen=True)
class Kernel:
    """What the gateway tells about one kernel."""

    id: str
    name: str
    execution_state: str
    last_activity: datetime | None
    connections: int

    @property
    def dead(self) -> bool:
        return self.execution_state == "dead"

    @classmethod
    def from_model(cls, model: dict[str, Any], kernel_id: str = "") -> Kernel:
        connections = model.get("connections")
        return cls(
            id=str(model.get("id") or kernel_id),
            name=str(model.get("name", "")),
            execution_state=str(model.get("execution_state", "unknown")),
            last_activity=parse_time(model.get("last_activity")),
            connections=connections if isinstance(connections, int) else 0,
        )


def parse_time(value: object) -> datetime | None:
    """An aware datetime from the gateway's or Kubernetes' ISO 8601 text (``Z`` suffix too)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


class GatewayClient:
    """REST access to one Enterprise Gateway; one instance serves every session of the operator.

    The HTTP connection pool is created on first use, inside the running event loop.  Starts
    are not retried here (``config.max_retries`` is for sessions): kopf's backoff retries the
    handler.
    """

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.base_url = config.gateway_http
        self._http: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(headers=self.config.headers)
        return self._http

    async def _run(self, flow: proto.Flow) -> Any:
        perform = proto.rest_performer_async(
            self._session(), request_timeout=self.config.request_timeout
        )
        return await proto.run_flow_async(flow, perform)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- kernels ----------------------------------------------------------------------------

    async def kernel(self, kernel_id: str) -> Kernel | None:
        """The kernel ``kernel_id``, or ``None`` if the gateway has no such kernel."""
        model = await self._run(proto.kernel_model_flow(self.base_url, kernel_id))
        return None if model is None else Kernel.from_model(model, kernel_id)

    async def kernels(self) -> list[Kernel]:
        """Every kernel on the gateway (the gateway must run with ``EG_LIST_KERNELS=True``)."""
        models = await self._run(proto.list_kernels_flow(self.base_url))
        return [Kernel.from_model(m) for m in models]

    async def ensure_kernel(
        self, kernel_id: str, kernel_name: str, env: dict[str, str], *, probe_first: bool = True
    ) -> tuple[Kernel, bool]:
        """The kernel ``kernel_id``, started with ``kernel_name`` and ``env`` unless it exists.

        Returns the kernel and whether this call started it.  The id travels in
        ``env.KERNEL_ID`` (Enterprise Gateway takes a v4 UUID there), so repeating the call
        after a crash or a lost answer finds the kernel instead of starting a second one.
        ``probe_first`` looks the kernel up before starting it; without it (a first attempt,
        where the kernel almost never exists) the start goes first and a refused duplicate is
        looked up afterwards, one request instead of two either way.  Retrying is left to the
        caller (kopf's backoff): the core's start flow runs once.
        """
        if probe_first:
            existing = await self.kernel(kernel_id)
            if existing is not None:
                return existing, False
        launch = self.config.replace(
            kernel_name=kernel_name, launch_env={**env, "KERNEL_ID": kernel_id}, max_retries=0
        )
        try:
            started_id = await self._run(proto.start_flow(launch))
        except GatewayError as exc:
            # A start for an id the gateway has or is starting answers 409 (stock EG 3.3: 500):
            # a start sent earlier (before a crash, or whose answer was lost) got there first.
            # Adopt that kernel; while it is still starting, try again later.
            in_use = exc.status_code == 409
            if isinstance(exc, GatewayRefusedError) and not in_use:
                raise
            raced = await self.kernel(kernel_id)
            if raced is not None:
                return raced, False
            if in_use:
                raise GatewayError(
                    f"kernel {kernel_id} is still being started by an earlier request",
                    status_code=409,
                ) from exc
            raise
        if started_id != kernel_id:
            # A gateway that ignores KERNEL_ID would break idempotency: refuse to go on with it.
            await self.shutdown_kernel(started_id)
            raise GatewayError(
                f"the gateway started kernel {started_id} instead of the requested {kernel_id} "
                "(it must honour env.KERNEL_ID)"
            )
        # The gateway answered with the kernel's model; what matters of it is known already.
        started = Kernel(kernel_id, kernel_name, "starting", datetime.now(timezone.utc), 0)
        return started, True

    async def shutdown_kernel(self, kernel_id: str) -> None:
        """Shut the kernel down; a kernel the gateway does not have counts as shut down."""
        ref = proto.KernelRef(self.base_url, "", kernel_id, "")
        await self._run(proto.shutdown_flow(ref))
