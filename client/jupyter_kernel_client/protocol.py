"""The protocol core, public for internal users: the SandboxSession controller, the benches,
tools that need the gateway's REST flows without a session.

A *flow* is a generator of actions (:class:`Http`, :class:`Connect`, :class:`Send`,
:class:`Receive`, :class:`Sleep`); :func:`run_flow` drives one with a blocking performer and
:func:`run_flow_async` with an awaitable one.  For REST-only flows (start, inspect, list, shut
down kernels) the performers are :func:`rest_performer` (``requests``) and
:func:`rest_performer_async` (``aiohttp``, the ``async`` extra)::

    from jupyter_kernel_client import GatewayConfig, protocol

    config = GatewayConfig("http://localhost:8889")
    with requests.Session() as http:
        kernel_id = protocol.run_flow(protocol.start_flow(config), protocol.rest_performer(http))

The sessions run the same flows (message construction, parent-id matching, result assembly
are written once, there).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ._config import GatewayConfig, kernel_username, ws_of
from ._protocol import (
    CLOSED,
    JSON_CODEC,
    V1_CODEC,
    WS_SUBPROTOCOL,
    Action,
    Codec,
    Connect,
    ExecutionCollector,
    Flow,
    Http,
    KernelRef,
    Message,
    OutputCallback,
    Receive,
    Response,
    Send,
    Sleep,
    channels_url,
    codec_for,
    connect_flow,
    error_for_status,
    execute_flow,
    execute_request,
    gateway_reason,
    interrupt_flow,
    kernel_info_request,
    kernel_model_flow,
    kernel_state_flow,
    kernels_url,
    kernelspecs_url,
    list_kernels_flow,
    message_type,
    new_message,
    parent_id,
    run_flow,
    run_flow_async,
    shutdown_flow,
    start_flow,
    start_kernel_body,
)

if TYPE_CHECKING:
    import aiohttp
    import requests

__all__ = [
    "CLOSED",
    "JSON_CODEC",
    "V1_CODEC",
    "WS_SUBPROTOCOL",
    "Action",
    "Codec",
    "Connect",
    "ExecutionCollector",
    "Flow",
    "GatewayConfig",
    "Http",
    "KernelRef",
    "Message",
    "OutputCallback",
    "Receive",
    "Response",
    "Send",
    "Sleep",
    "channels_url",
    "codec_for",
    "connect_flow",
    "error_for_status",
    "execute_flow",
    "execute_request",
    "gateway_reason",
    "interrupt_flow",
    "kernel_info_request",
    "kernel_model_flow",
    "kernel_state_flow",
    "kernel_username",
    "kernels_url",
    "kernelspecs_url",
    "list_kernels_flow",
    "message_type",
    "new_message",
    "parent_id",
    "rest_performer",
    "rest_performer_async",
    "run_flow",
    "run_flow_async",
    "shutdown_flow",
    "start_flow",
    "start_kernel_body",
    "ws_of",
]


def rest_performer(
    http: requests.Session, *, request_timeout: float = 30.0
) -> Callable[[Action], Any]:
    """A blocking performer of REST-only flows over ``http`` (for :func:`run_flow`)."""
    from ._session import perform_rest

    return functools.partial(perform_rest, http, request_timeout=request_timeout)


def rest_performer_async(
    http: aiohttp.ClientSession, *, request_timeout: float = 30.0
) -> Callable[[Action], Awaitable[Any]]:
    """An awaitable performer of REST-only flows over ``http`` (for :func:`run_flow_async`)."""
    from ._async_session import perform_rest_async

    return functools.partial(perform_rest_async, http, request_timeout=request_timeout)
