"""Basic use of the sync client: results, printed output, errors, timeouts, files, a pool.

    GATEWAY_HTTP=http://localhost:8889 GATEWAY_WS=ws://localhost:8889 python examples/basic_usage.py

SHARED_DIR is where the kernel writes its file (``/data/shared`` in the containers).
"""

import os

import stack_env  # noqa: F401  (the tokens ./test_env.sh wrote into .env)

from jupyter_kernel_client import ExecutionTimeoutError, GatewayKernelSession, KernelSessionPool

GATEWAY_HTTP = os.environ.get("GATEWAY_HTTP", "http://localhost:8889")
GATEWAY_WS = os.environ.get("GATEWAY_WS", "ws://localhost:8889")
SHARED_DIR = os.environ.get("SHARED_DIR", "/data/shared")

with GatewayKernelSession(GATEWAY_HTTP, GATEWAY_WS, "python3") as session:
    result = session.execute("2 + 2")
    print(result)  # 4

    # Indented blocks run as written; the kernel writes to the shared volume.
    session.execute(f"""
        with open({SHARED_DIR!r} + '/my_output.txt', 'w') as f:
            f.write('Hello from the kernel!')
    """).raise_for_error()
    print(session.execute(f"print(open({SHARED_DIR!r} + '/my_output.txt').read())"))

    # An exception in the code is data, not a crash of the client.
    failed = session.execute("1 / 0")
    print("status:", failed.status, "-", failed.error.ename if failed.error else None)

    # Output can be streamed while the code runs.
    session.execute(
        "for i in range(3): print('tick', i)",
        on_output=lambda event: print("streamed:", repr(event.text)),
    )

    # Code that never ends is interrupted; the session stays usable.
    try:
        session.execute("import time; time.sleep(60)", timeout=1)
    except ExecutionTimeoutError as exc:
        print("timed out:", exc)
    print("after the timeout:", session.execute("'still alive'"))

# A pool hands out pre-started kernels.
with KernelSessionPool(GATEWAY_HTTP, GATEWAY_WS, "python3", size=2) as pool, pool.session() as s:
    print("pooled kernel says:", s.execute("6 * 7"))
