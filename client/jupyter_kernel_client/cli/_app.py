"""The state one invocation shares between the group and its command: the settings (resolved on
first use, so ``--help`` reads no file) and the client objects built from them.

The client's session and HTTP modules are imported inside the methods that need them: the
command line's own import stays cheap.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

import click

from . import _config
from ._errors import CliError, Exit, Service, usage

if TYPE_CHECKING:
    import requests

    from .._config import FileServerConfig, GatewayConfig
    from .._session import GatewayKernelSession

# A command line fails fast on a closed port, where a long-running program would wait.
MAX_RETRIES: Final = 1
RETRY_DELAY: Final = 0.5
STARTUP_TIMEOUT: Final = 60.0

F = TypeVar("F", bound=Callable[..., Any])


class App:
    def __init__(self, flags: _config.Flags, env_file: Path | None) -> None:
        self.flags = flags
        self._env_file = env_file

    @functools.cached_property
    def settings(self) -> _config.Settings:
        return _config.load(self.flags, os.environ, Path.cwd(), self._env_file)

    def _hint(self, variable: str, flag: str) -> str:
        where = self.settings.env_file
        return f"set {variable} or {flag} (see {where if where else '.env'})"

    # --- the gateway ---------------------------------------------------------------------

    @property
    def gateway(self) -> Service:
        s = self.settings
        hint = self._hint("JUPYTER_GATEWAY_AUTH_TOKEN", "--token")
        return Service("gateway", s.gateway_http, bool(s.token), hint)

    def gateway_config(self, kernel_name: str = "python3") -> GatewayConfig:
        from .._config import GatewayConfig

        s = self.settings
        try:
            return GatewayConfig(
                s.gateway_http,
                s.gateway_ws,
                kernel_name=kernel_name,
                token=s.token,
                startup_timeout=STARTUP_TIMEOUT,
                max_retries=MAX_RETRIES,
                retry_delay=RETRY_DELAY,
            )
        except ValueError as exc:
            raise usage(f"bad gateway setting: {exc}") from exc

    @contextmanager
    def session(
        self,
        kernel_name: str = "python3",
        kernel_id: str | None = None,
        *,
        detach_shutdown: bool = False,
    ) -> Iterator[GatewayKernelSession]:
        """A started session: the running kernel ``kernel_id``, left running, or a fresh
        kernel, shut down at the end.

        ``detach_shutdown``: after a block that succeeded, the fresh kernel's shutdown (a
        ``DELETE`` the gateway answers only once the kernel has exited, a large part of a
        short ``run``) is left to a child process, so that the command returns with its
        output complete.  After a failure it is waited for, as without the option.
        """
        from .. import protocol
        from .._exceptions import KernelDiedError
        from .._session import GatewayKernelSession

        config = self.gateway_config(kernel_name)
        owned = kernel_id is None
        if kernel_id is None:
            # Started here, not by the session, so that the session only attaches and its
            # shutdown closes the connection: the kernel's shutdown is ours to schedule.
            with self.gateway_http(config) as (_, perform):
                kernel_id = protocol.run_flow(protocol.start_flow(config), perform)
        assert kernel_id is not None
        detach = False
        try:
            session = GatewayKernelSession(config, kernel_id=kernel_id)
            try:
                session.start()
            except KernelDiedError as exc:
                if owned:
                    raise
                raise no_such_session(kernel_id) from exc
            try:
                yield session
            finally:
                session.shutdown()
            detach = detach_shutdown
        finally:
            if owned:
                self._shut_down(config, kernel_id, detach=detach)

    def _shut_down(self, config: GatewayConfig, kernel_id: str, *, detach: bool) -> None:
        from .. import protocol

        if detach and hasattr(os, "fork"):
            sys.stdout.flush()
            sys.stderr.flush()
            if os.fork() != 0:
                return
            # The child: out of the terminal's session and off the caller's pipes, so that
            # neither a Ctrl-C nor a reader waiting for EOF waits for it.
            try:
                os.setsid()
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
                self._shut_down(config, kernel_id, detach=False)
            finally:
                os._exit(0)
        ref = protocol.KernelRef(config.gateway_http, config.gateway_ws, kernel_id, "")
        with self.gateway_http(config) as (_, perform):
            protocol.run_flow(protocol.shutdown_flow(ref), perform)

    @contextmanager
    def gateway_http(
        self, config: GatewayConfig | None = None
    ) -> Iterator[tuple[GatewayConfig, Callable[[Any], Any]]]:
        """The config and a REST performer for the protocol module's flows."""
        import requests

        from .. import protocol

        config = config or self.gateway_config()
        with requests.Session() as http:
            http.headers.update(config.headers)
            yield config, protocol.rest_performer(http, request_timeout=config.request_timeout)

    # --- the file server -----------------------------------------------------------------

    @property
    def file_server(self) -> Service:
        s = self.settings
        hint = self._hint("FILE_SERVER_TOKEN", "--file-server-token")
        return Service("file server", s.file_server_url, bool(s.file_server_token), hint)

    def file_server_config(self) -> FileServerConfig:
        from .._config import FileServerConfig

        s = self.settings
        if not s.file_server_token:
            raise usage(f"no file server token: {self.file_server.token_hint}")
        try:
            return FileServerConfig(s.file_server_url, s.file_server_token)
        except ValueError as exc:
            raise usage(f"bad file server setting: {exc}") from exc

    @contextmanager
    def file_server_http(self) -> Iterator[tuple[FileServerConfig, requests.Session]]:
        import requests

        files = self.file_server_config()
        with requests.Session() as http:
            yield files, http


def no_such_session(kernel_id: str) -> CliError:
    """An unknown id, or another tenant's kernel: the gateway answers both alike."""
    return CliError(f"no such session: {kernel_id} (see: mini-sandbox sessions ls)", Exit.REFUSED)


def pass_app(command: F) -> F:
    """Give ``command`` the invocation's :class:`App` as its first argument."""
    return cast(F, click.make_pass_decorator(App)(command))
