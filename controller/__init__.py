"""The SandboxSession controller: a kopf operator that turns SandboxSessions into kernels.

Layers, one way only: ``handlers`` (kopf) → ``reconcile`` (pure async logic, testable without
kopf) → ``gateway`` (the client package's protocol core over aiohttp).  Run it with
``kopf run --standalone -m controller.main --all-namespaces`` or ``python -m controller``.
"""
