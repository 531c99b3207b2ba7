"""The gateway's sandbox logic, loaded into Enterprise Gateway by ``sandbox_gateway.config``.

``admission``  what a start request may ask for: limits, env checks, tenants and owners
``pool``       warm kernels per kernelspec, handed out by the start path
``response``   the launch-response server (kernels' encrypted connection info)
``proxies``    the process proxies (Docker: a network per kernel)
``http``       HTTP hardening (the Host allow-list, bounded messages, EG fixes), the status route
``metrics``    Prometheus metrics, on the API port or one of their own
``launchers``  the kernel launchers EG runs per kernel (Docker, Kubernetes) and their shared rules

Importing this package imports nothing else: the file server and the notebook use
``sandbox_gateway.http.hosts`` without Enterprise Gateway installed.
"""
