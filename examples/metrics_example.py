"""Prometheus metrics of a session, served on /metrics for Prometheus to scrape.

    GATEWAY_HTTP=http://localhost:8889 GATEWAY_WS=ws://localhost:8889 METRICS_PORT=8000 \\
        python examples/metrics_example.py
"""

import os
import urllib.request

import stack_env  # noqa: F401  (the tokens ./test_env.sh wrote into .env)
from prometheus_client import start_http_server

from jupyter_kernel_client import PrometheusGatewayKernelSession

GATEWAY_HTTP = os.environ.get("GATEWAY_HTTP", "http://localhost:8889")
GATEWAY_WS = os.environ.get("GATEWAY_WS", "ws://localhost:8889")
METRICS_PORT = int(os.environ.get("METRICS_PORT", "8000"))

# Start the Prometheus HTTP server.
start_http_server(METRICS_PORT, addr="127.0.0.1")

# A session with metrics.
session = PrometheusGatewayKernelSession(GATEWAY_HTTP, GATEWAY_WS, "python3")

with session:
    result = session.execute("print('Hello, Prometheus!')")
    print(result)
    for n in range(5):
        session.execute(f"sum(range({n} * 1000))")
    session.execute("1 / 0")  # counted with status="error"

# What Prometheus would scrape:
with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics") as response:
    for line in response.read().decode().splitlines():
        if line.startswith(("jupyter_kernel_executions_total", "jupyter_kernel_active")):
            print(line)
