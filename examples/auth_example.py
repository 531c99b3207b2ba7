"""Files between this machine and the kernel: in-kernel file ops and the token-protected server.

    GATEWAY_HTTP=http://localhost:8889 GATEWAY_WS=ws://localhost:8889 \\
    FILE_SERVER_URL=http://localhost:8080 FILE_SERVER_TOKEN=... python examples/auth_example.py

FILE_SERVER_TOKEN and the gateway token default to the ones ./test_env.sh wrote into .env.
"""

import os
import tempfile
from pathlib import Path

import stack_env  # noqa: F401  (the tokens ./test_env.sh wrote into .env)

from jupyter_kernel_client import AuthenticatedKernelSession

GATEWAY_HTTP = os.environ.get("GATEWAY_HTTP", "http://localhost:8889")
GATEWAY_WS = os.environ.get("GATEWAY_WS", "ws://localhost:8889")
FILE_SERVER_URL = os.environ.get("FILE_SERVER_URL", "http://localhost:8080")


TOKEN = os.environ.get("FILE_SERVER_TOKEN") or ""
if not TOKEN:
    raise SystemExit("FILE_SERVER_TOKEN is not set and .env has none: run ./test_env.sh first")
SHARED_DIR = os.environ.get("SHARED_DIR", "/data/shared")  # where kernels see the volume

session = AuthenticatedKernelSession(
    GATEWAY_HTTP,
    GATEWAY_WS,
    "python3",
    file_server_url=FILE_SERVER_URL,
    auth_token=TOKEN,
    shared_dir=SHARED_DIR,
)

workdir = Path(tempfile.mkdtemp())
os.chdir(workdir)
Path("local_file.txt").write_text("uploaded from the client\n")

with session:
    # The kernel writes a file on the shared volume.
    session.execute_file_op("write", "test.txt", content="Hello from authenticated kernel!")
    print("kernel wrote:", session.execute_file_op("read", "test.txt"))

    # Upload a local file; the kernel sees it under SHARED_DIR.
    remote = session.upload_to_kernel("local_file.txt")
    print("kernel reads upload:", session.execute(f"open({remote!r}).read().strip()"))

    # The kernel produces a CSV; download it through the file server.
    session.execute(f"""
        import csv
        with open({SHARED_DIR!r} + '/kernel_output.csv', 'w', newline='') as f:
            csv.writer(f).writerows([['n', 'square'], *[[n, n * n] for n in range(4)]])
    """).raise_for_error()
    path = session.download_from_kernel("kernel_output.csv")
    print("downloaded:", path.name, path.read_text().splitlines()[-1])
    print("shared files:", [e["name"] for e in session.execute_file_op("list", "")])
