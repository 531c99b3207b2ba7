"""The controller's gateway client (``controller/gateway.py``) against the real gateway: starting a
kernel id that another request already started adopts that kernel instead of failing."""

from __future__ import annotations

import asyncio
import uuid

import requests

from controller.gateway import GatewayClient
from jupyter_kernel_client import GatewayConfig
from testkit.gateway import Gateway


def test_a_start_whose_id_is_already_taken_adopts_that_kernel(gateway: Gateway) -> None:
    """The gateway answers such a start with 409; the controller's retry after a crash or a
    lost answer (start first, ``probe_first=False``) must find the kernel it started before."""
    kernel_id = str(uuid.uuid4())
    body = {"name": "python3", "env": {"KERNEL_ID": kernel_id, "KERNEL_USERNAME": "earlier"}}
    assert requests.post(f"{gateway.http}/api/kernels", json=body, timeout=60).status_code == 201

    async def ensure() -> tuple[str, bool]:
        config = GatewayConfig(gateway.http, gateway.ws, "python3")
        async with GatewayClient(config) as client:
            kernel, started = await client.ensure_kernel(
                kernel_id, "python3", {}, probe_first=False
            )
            return kernel.id, started

    try:
        assert asyncio.run(ensure()) == (kernel_id, False)
        assert [k["id"] for k in gateway.kernels()] == [kernel_id]
    finally:
        requests.delete(f"{gateway.http}/api/kernels/{kernel_id}", timeout=30)
