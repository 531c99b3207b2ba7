"""AuthenticatedKernelSession: the seed's name for a sync session with ``files=``."""

from __future__ import annotations

from typing import Any

from ._config import FileServerConfig
from ._session import GatewayKernelSession

DEFAULT_SHARED_DIR = "/data/shared"


class AuthenticatedKernelSession(GatewayKernelSession):
    """``GatewayKernelSession(..., files=FileServerConfig(file_server_url, auth_token,
    shared_dir))``, under the seed's name and arguments.

    ``execute_file_op`` runs in the kernel on ``shared_dir``; ``upload_to_kernel`` and
    ``download_from_kernel`` go through the token-protected file server whose root is the same
    volume.  Any other argument is :class:`GatewayKernelSession`'s.
    """

    def __init__(
        self,
        *args: Any,
        file_server_url: str,
        auth_token: str,
        shared_dir: str = DEFAULT_SHARED_DIR,
        **kwargs: Any,
    ) -> None:
        files = FileServerConfig(file_server_url, auth_token, shared_dir)
        super().__init__(*args, files=files, **kwargs)

    @property
    def file_server_url(self) -> str:
        return self._require_files().url

    @property
    def shared_dir(self) -> str:
        """Where the kernel sees the shared volume."""
        return self._require_files().shared_dir
