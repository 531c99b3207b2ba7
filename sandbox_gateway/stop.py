"""What a stopping gateway does with its kernels.

Enterprise Gateway shuts every kernel down when it stops, SIGTERM included.  On Kubernetes a
SIGTERM is what a pod gets when it is deleted, drained or rescheduled, and the kernels then die
with it although the next gateway pod could re-adopt them from the persisted sessions.  With
``SANDBOX_KEEP_KERNELS_ON_STOP`` (only together with session persistence on a volume that
outlives the pod) a stopping gateway leaves its kernels running and their sessions in place; the
next one loads them at start-up.  Warm pool kernels still go: no session owns them.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("sandbox_gateway.stop")


def apply() -> None:
    from enterprise_gateway.enterprisegatewayapp import EnterpriseGatewayApp

    def shutdown(self: Any) -> None:
        kept = self.kernel_manager.list_kernel_ids()
        self.log.info(
            "sandbox gateway: stopping without shutting down %d kernel(s); their sessions stay "
            "persisted for the next gateway to re-adopt",
            len(kept),
        )

    EnterpriseGatewayApp.shutdown = shutdown  # type: ignore[method-assign]
