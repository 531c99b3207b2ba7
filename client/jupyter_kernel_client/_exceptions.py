"""The package's one exception tree.

    KernelClientError                     root: catch this to catch everything below
    ├── TransportError                    the network failed (connection refused, socket closed)
    │   └── ConnectionLostError           the kernel's websocket dropped under a request; the
    │                                     session reconnects to the same kernel on next use
    ├── GatewayError                      the gateway answered with an error (5xx after retries)
    │   └── GatewayRefusedError           4xx: the request can never succeed as sent
    │       ├── AuthenticationError       401: missing or wrong gateway token
    │       ├── UnknownKernelNameError    no kernelspec of that name on the gateway
    │       ├── KernelLimitError          a kernel limit (total or per user) is reached
    │       └── EgressRefusedError        the egress asked for is beyond the gateway's ceiling
    ├── KernelDiedError                   the kernel died or restarted under an execution
    ├── ExecutionTimeoutError             execute() ran past its timeout (kernel was interrupted)
    ├── CommandTimeoutError               run_command() ran past its timeout (its processes killed)
    ├── CommandError                      run_command() could not run the command at all
    ├── StartupTimeoutError               the kernel did not answer within startup_timeout
    ├── ExecutionError                    raised by ExecutionResult.raise_for_error()
    ├── SessionStateError                 the session is not started, or already closed
    ├── PoolTimeoutError                  no kernel became free in the pool within the timeout
    ├── FileOperationError                a file operation run in the kernel failed
    └── FileServerError                   the file server refused a request
        ├── FileServerAuthError           401/403: missing or wrong token
        ├── RemoteFileNotFoundError       404: no such file on the shared volume
        └── FileTooLargeError             413: the upload exceeds the server's limit

Exceptions from ``requests``, ``websocket-client`` and ``aiohttp`` never leak: they are converted
at the boundary into one of the classes above, with the original kept as ``__cause__``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._commands import CommandResult
    from ._result import ExecutionResult


class KernelClientError(Exception):
    """Root of every error raised by jupyter_kernel_client."""


class TransportError(KernelClientError):
    """The connection to the gateway failed or was closed unexpectedly."""


class ConnectionLostError(TransportError):
    """The connection to the kernel dropped while a request was in flight.

    The kernel was still there when this was raised; its outcome for that request is unknown.
    The session stays usable: its next use reconnects (with backoff) to the same kernel, or
    raises :class:`KernelDiedError` if the kernel is gone by then.  ``request_sent`` is False
    when the request never left the client (the connection was already gone when it was sent).
    """

    request_sent: bool = True


def unsent(cause: BaseException) -> ConnectionLostError:
    """The error for a request the kernel's websocket could not take at all."""
    error = ConnectionLostError(f"cannot send to the kernel websocket: {cause}")
    error.request_sent = False
    return error


class GatewayError(KernelClientError):
    """The gateway answered a request with an error status."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class GatewayRefusedError(GatewayError):
    """The gateway refused the request (4xx); retrying the same request cannot help."""


class AuthenticationError(GatewayRefusedError):
    """The gateway does not know this token (401): set ``gateway_token=`` or
    ``$JUPYTER_GATEWAY_AUTH_TOKEN`` to the token the gateway's operator gave you."""


class UnknownKernelNameError(GatewayRefusedError):
    """The gateway has no kernelspec with the requested name."""

    def __init__(self, kernel_name: str, available: list[str], *, status_code: int | None) -> None:
        names = ", ".join(sorted(available)) or "none"
        super().__init__(
            f"gateway has no kernel named {kernel_name!r} (available: {names})",
            status_code=status_code,
        )
        self.kernel_name = kernel_name
        self.available = available


class KernelLimitError(GatewayRefusedError):
    """The gateway runs as many kernels as it allows, in total or for this ``KERNEL_USERNAME``,
    or its host is short of memory.

    Not retried: a slot frees only when a kernel is shut down (or culled), so the caller decides
    whether to release one of its kernels, wait, or give up.  ``scope`` is ``"total"``,
    ``"user"`` or ``"memory"`` (the host's available memory is below the gateway's reserve);
    ``limit``, ``in_use`` and ``user`` are the gateway's figures when it sent them.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None,
        scope: str,
        limit: int | None = None,
        in_use: int | None = None,
        user: str | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.scope = scope
        self.limit = limit
        self.in_use = in_use
        self.user = user


class EgressRefusedError(GatewayRefusedError):
    """The start asked for egress (``egress_allow``, ``KERNEL_EGRESS_ALLOW``) that the gateway
    does not grant: a name beyond its ceiling, or a gateway without egress.  Nothing started.
    ``requested`` and ``ceiling`` are the gateway's figures when it sent them."""

    def __init__(
        self, message: str, *, status_code: int | None, requested: str = "", ceiling: str = ""
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.requested = requested
        self.ceiling = ceiling


class KernelDiedError(KernelClientError):
    """The kernel died (or was restarted, losing its state) while the client depended on it."""


class ExecutionTimeoutError(KernelClientError, TimeoutError):
    """An execution exceeded its timeout; the kernel was interrupted and the session is usable.

    :attr:`stopped` is False when the kernel was still busy after the interrupt's grace period:
    not every kernel interrupts everything (Deno's does not stop an awaited promise, and stays
    busy for good after such an interrupt), and then the session's next executions wait until
    the code ends, if ever: shut the session down and start another."""

    def __init__(self, message: str, *, stopped: bool = True) -> None:
        super().__init__(message)
        self.stopped = stopped


class CommandTimeoutError(KernelClientError, TimeoutError):
    """A shell command ran past its timeout: its whole process group was killed, and the
    session and the kernel's state are usable.  :attr:`result` holds what it printed until
    then (``None`` if the kernel did not report it in time)."""

    def __init__(self, message: str, result: CommandResult | None = None) -> None:
        super().__init__(message)
        self.result = result


class CommandError(KernelClientError):
    """A shell command could not be run: no such ``cwd`` or executable, or a kernel that is not
    Python's."""


class StartupTimeoutError(KernelClientError, TimeoutError):
    """The kernel did not become ready within ``startup_timeout`` seconds."""


class ExecutionError(KernelClientError):
    """The code raised an exception inside the kernel (see :attr:`result`)."""

    def __init__(self, result: ExecutionResult) -> None:
        error = result.error
        summary = f"{error.ename}: {error.evalue}" if error else f"execution {result.status}"
        super().__init__(summary)
        self.result = result


class SessionStateError(KernelClientError):
    """The session is used outside its lifecycle (before start, or after close)."""


class PoolTimeoutError(KernelClientError, TimeoutError):
    """No pooled kernel became available within the acquire timeout."""


class FileOperationError(KernelClientError):
    """A file operation performed by code in the kernel failed (see ``ename``)."""

    def __init__(self, message: str, *, ename: str = "") -> None:
        super().__init__(message)
        self.ename = ename


class FileServerError(KernelClientError):
    """The file server answered with an error status."""

    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class FileServerAuthError(FileServerError):
    """The file server refused the token (401) or the operation (403)."""


class RemoteFileNotFoundError(FileServerError):
    """The file does not exist on the shared volume (404)."""


class FileTooLargeError(FileServerError):
    """The upload is larger than the file server accepts (413)."""
