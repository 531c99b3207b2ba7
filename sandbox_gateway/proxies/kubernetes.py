"""Kubernetes kernels on the gateway's side: a pod the warm pool hands to a user is relabelled.

A pod's name cannot change, so a warm kernel's pod keeps the pool's name; its owner label
(``minisandbox.dev/kernel-username``, set by ``launchers.kubernetes`` at creation) and the
kernel id it now serves (``minisandbox.dev/kernel-id``) are patched to the claim's, so that
``kubectl get pods -L minisandbox.dev/kernel-username`` and audits show the owner.  The
``kernel_id`` label the gateway selects its pod by stays the pool's.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from enterprise_gateway.services.processproxies.k8s import KubernetesProcessProxy

from sandbox_gateway.launchers.kubernetes import (
    LABEL_VALUE,
    OWNER_LABEL,
    InClusterAPI,
    LaunchError,
)

log = logging.getLogger("sandbox_gateway.proxies.kubernetes")
KERNEL_ID_LABEL = "minisandbox.dev/kernel-id"
# One thread: the patches are rare, small, and must not hold up the event loop (a claim is the
# pool's fast path).
_patcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-relabel")


class SandboxKubernetesProcessProxy(KubernetesProcessProxy):
    def handed_over(self, user: str) -> None:
        kernel_id = self.kernel_manager.kernel_id or self.kernel_id
        labels = {KERNEL_ID_LABEL: kernel_id}
        if LABEL_VALUE.match(user):
            labels[OWNER_LABEL] = user
        asyncio.get_running_loop().run_in_executor(
            _patcher, relabel, str(self.kernel_namespace), str(self.container_name), labels
        )


def relabel(namespace: str, pod: str, labels: dict[str, Any]) -> None:
    """Patch the pod's labels; the claim has happened, so a refusal is logged, not raised."""
    try:
        InClusterAPI().label_pod(namespace, pod, labels)
    except (LaunchError, OSError) as exc:
        log.warning("could not relabel pod %s/%s after its claim: %s", namespace, pod, exc)
