"""A test-only Enterprise Gateway process proxy: a remote kernel's launch path without containers.

``LocalLauncherProcessProxy`` runs a kernelspec's ``argv`` (gateway_provisioners' real
``launch_ipykernel.py``) as a local process.  Like a container kernel, the launcher answers over
the gateway's response address with its encrypted connection info, and the gateway waits for that
answer through ``RemoteProcessProxy.receive_connection_info``, under the launch timeout.  The
kernel's address (``assigned_ip``) is 127.0.0.1, where its answer comes from.

``KERNEL_TEST_LAUNCH_DELAY`` (seconds, in the start request's ``env``) starts the launcher that
much later, leaving a window in which an attacker can answer first.  Loaded by the test gateway
from ``PYTHONPATH``; never part of the gateway image.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Any

from enterprise_gateway.services.processproxies.processproxy import RemoteProcessProxy

KERNEL_ADDRESS = "127.0.0.1"


class LocalLauncherProcessProxy(RemoteProcessProxy):  # type: ignore[misc]  # EG is untyped
    """Runs the kernel launcher as a local process that answers over the response address."""

    async def launch_process(self, kernel_cmd: Any, **kwargs: Any) -> LocalLauncherProcessProxy:
        await super().launch_process(kernel_cmd, **kwargs)
        self.start_time = self.get_current_time()  # the launch timeout counts from here
        self.assigned_ip, self.assigned_host = KERNEL_ADDRESS, "localhost"
        await asyncio.sleep(float(kwargs["env"].get("KERNEL_TEST_LAUNCH_DELAY") or 0))
        self.local_proc = self.launch_kernel(kernel_cmd, **kwargs)
        self.pid = self.local_proc.pid
        self.launcher_session = self.local_proc.pid  # jupyter_client starts a new session
        self.ip = KERNEL_ADDRESS
        self.log.info(f"Kernel launcher started, pid {self.pid}, KernelID: {self.kernel_id}")
        await self.confirm_remote_startup()
        return self

    def kill(self) -> bool | None:
        """Also end the launcher's forked listener, which outlives a killed kernel.

        In a container the container's end takes it; here a launch that timed out would leave it
        running.
        """
        result: bool | None = super().kill()
        session = getattr(self, "launcher_session", 0)
        if session:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(session, signal.SIGKILL)
        return result

    async def confirm_remote_startup(self) -> None:
        """EG's container loop: until the answer comes, check the timeout and the process."""
        ready = False
        while not ready:
            await self.handle_timeout()
            self.detect_launch_failure()
            ready = await self.receive_connection_info()
