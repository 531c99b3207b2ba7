"""jupyter_kernel_client — run code in kernels of a Jupyter Enterprise Gateway.

Design: one I/O-free protocol core (``_protocol``, public as :mod:`.protocol`) builds every
request, matches replies by parent ``msg_id``, decides when an execution is complete and
assembles its result.  A conversation is a generator of actions; :class:`GatewayKernelSession`
performs them with blocking I/O (``requests`` + ``websocket-client``) and
:class:`AsyncGatewayKernelSession` with ``await`` (``aiohttp``) — httpx's way: two thin faces
sharing ``_base.SessionBase``, which holds the configuration, the features and the lifecycle.
The pools are two faces of ``_pool.PoolBase`` in the same way.

Configuration is one immutable :class:`GatewayConfig`, shared by every face, the pools and the
SandboxSession controller.  Shell commands (``run_command``) go through the same execute flow,
run by code in the kernel (``_commands``).  Features are arguments, not subclasses: ``files=``
(:class:`FileServerConfig`) and ``metrics=`` (:class:`KernelMetrics`) combine on both faces;
:class:`AuthenticatedKernelSession` and :class:`PrometheusGatewayKernelSession` are the seed's
names for two such combinations.

Errors form one tree rooted at :class:`KernelClientError` (drawn in ``_exceptions``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._commands import CommandResult
from ._config import FileServerConfig, GatewayConfig
from ._exceptions import (
    AuthenticationError,
    CommandError,
    CommandTimeoutError,
    ConnectionLostError,
    EgressRefusedError,
    ExecutionError,
    ExecutionTimeoutError,
    FileOperationError,
    FileServerAuthError,
    FileServerError,
    FileTooLargeError,
    GatewayError,
    GatewayRefusedError,
    KernelClientError,
    KernelDiedError,
    KernelLimitError,
    PoolTimeoutError,
    RemoteFileNotFoundError,
    SessionStateError,
    StartupTimeoutError,
    TransportError,
    UnknownKernelNameError,
)
from ._fileops import FileEntry, FileOp
from ._result import ExecutionResult, KernelErrorInfo, OutputEvent

if TYPE_CHECKING:
    from ._async_pool import AsyncKernelSessionPool
    from ._async_session import AsyncGatewayKernelSession
    from ._auth import AuthenticatedKernelSession
    from ._metrics import KernelMetrics, PrometheusGatewayKernelSession
    from ._pool import KernelSessionPool, PoolState
    from ._session import GatewayKernelSession

__all__ = [
    "AsyncGatewayKernelSession",
    "AsyncKernelSessionPool",
    "AuthenticatedKernelSession",
    "AuthenticationError",
    "CommandError",
    "CommandResult",
    "CommandTimeoutError",
    "ConnectionLostError",
    "EgressRefusedError",
    "ExecutionError",
    "ExecutionResult",
    "ExecutionTimeoutError",
    "FileEntry",
    "FileOp",
    "FileOperationError",
    "FileServerAuthError",
    "FileServerConfig",
    "FileServerError",
    "FileTooLargeError",
    "GatewayConfig",
    "GatewayError",
    "GatewayKernelSession",
    "GatewayRefusedError",
    "KernelClientError",
    "KernelDiedError",
    "KernelErrorInfo",
    "KernelLimitError",
    "KernelMetrics",
    "KernelSessionPool",
    "OutputEvent",
    "PoolState",
    "PoolTimeoutError",
    "PrometheusGatewayKernelSession",
    "RemoteFileNotFoundError",
    "SessionStateError",
    "StartupTimeoutError",
    "TransportError",
    "UnknownKernelNameError",
]

# Faces with optional dependencies load on first use, so `pip install mini-jupyter-sandbox`
# without extras still imports; a missing extra is reported with the command that adds it.
_OPTIONAL = {
    "AsyncGatewayKernelSession": ("._async_session", "async"),
    "AsyncKernelSessionPool": ("._async_pool", "async"),
    "AuthenticatedKernelSession": ("._auth", "auth"),
    "KernelMetrics": ("._metrics", "metrics"),
    "PrometheusGatewayKernelSession": ("._metrics", "metrics"),
}


# The sync faces load on first use too, for a quick start of what needs none of them (the
# command line's --help): they bring requests and websocket-client.
_DEFERRED = {
    "GatewayKernelSession": "._session",
    "KernelSessionPool": "._pool",
    "PoolState": "._pool",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name == "protocol":
        return importlib.import_module(".protocol", __name__)
    if name in _DEFERRED:
        value = getattr(importlib.import_module(_DEFERRED[name], __name__), name)
        globals()[name] = value
        return value
    if name not in _OPTIONAL:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, extra = _OPTIONAL[name]
    try:
        module = importlib.import_module(module_name, __name__)
    except ModuleNotFoundError as exc:
        raise ImportError(
            f"{name} needs the '{extra}' extra: pip install 'mini-jupyter-sandbox[{extra}]'"
        ) from exc
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
