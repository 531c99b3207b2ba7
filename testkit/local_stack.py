"""Local mode: the gateway (:8889) and the file server (:8080) without Docker — NOT ISOLATED.

    python -m testkit.local_stack        (or ./test_env.sh --local)

For trying the client's API on a machine without a Docker engine.  Kernels run as ordinary
processes of the current user, with full access to this machine: never run untrusted code in
this mode.  Shared files live in ./shared-data; the kernels see the same directory.
"""

from __future__ import annotations

import getpass
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from testkit.gateway import REPO, Gateway

BANNER = """
==========================================================================================
  LOCAL MODE — NOT ISOLATED.  Kernels are plain processes on this machine, with the rights
  of user {user}.  Use it to try the API; run untrusted code only in the Docker stack.
==========================================================================================
  gateway      http://127.0.0.1:{gateway_port}   (ws://127.0.0.1:{gateway_port})
  file server  http://127.0.0.1:{files_port}   token: {token}
  shared dir   {shared}   (pass shared_dir= to AuthenticatedKernelSession)
  Ctrl-C stops both.
"""


def main() -> None:
    gateway_port = int(os.environ.get("GATEWAY_PORT", "8889"))
    files_port = int(os.environ.get("FILE_SERVER_PORT", "8080"))
    token = os.environ.get("FILE_SERVER_TOKEN", "local-dev-token")
    shared = Path(os.environ.get("SHARED_DIR", REPO / "shared-data")).resolve()
    shared.mkdir(parents=True, exist_ok=True)

    gateway = Gateway(port=gateway_port, env={"SANDBOX_CULL_IDLE_TIMEOUT": "3600"}).start()
    files = subprocess.Popen(
        [sys.executable, "-m", "fileserver", "--host", "127.0.0.1", "--port", str(files_port)],
        cwd=REPO,
        env={**os.environ, "SHARED_DATA_DIR": str(shared), "FILE_SERVER_TOKEN": token},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{files_port}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if files.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the file server did not start")
            time.sleep(0.2)
        user = getpass.getuser()
        print(
            BANNER.format(
                user=user,
                gateway_port=gateway_port,
                files_port=files_port,
                token=token,
                shared=shared,
            ),
            flush=True,
        )
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C must not cut the clean-up short and orphan the kernels.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        files.terminate()
        files.wait(timeout=10)
        gateway.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    main()
