"""The async client: several kernels working at the same time.

    GATEWAY_HTTP=http://localhost:8889 GATEWAY_WS=ws://localhost:8889 \
        python examples/async_example.py
"""

import asyncio
import os

import stack_env  # noqa: F401  (the tokens ./test_env.sh wrote into .env)

from jupyter_kernel_client import AsyncGatewayKernelSession

GATEWAY_HTTP = os.environ.get("GATEWAY_HTTP", "http://localhost:8889")
GATEWAY_WS = os.environ.get("GATEWAY_WS", "ws://localhost:8889")


async def square(n: int) -> str:
    async with AsyncGatewayKernelSession(GATEWAY_HTTP, GATEWAY_WS, "python3") as session:
        result = await session.execute(f"{n} ** 2")
        return str(result)


async def main() -> None:
    async with AsyncGatewayKernelSession(GATEWAY_HTTP, GATEWAY_WS, "python3") as session:
        result = await session.execute("print('Hello, async world!')")
        print(result)

    squares = await asyncio.gather(*(square(n) for n in range(1, 4)))
    print("squares:", ", ".join(squares))


asyncio.run(main())
