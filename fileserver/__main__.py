"""``python -m fileserver`` / ``mini-sandbox-fileserver``: run the file server under uvicorn."""

from __future__ import annotations

import argparse
import os
import sys

import uvicorn
from pydantic import ValidationError

from fileserver.settings import describe_invalid, get_settings


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, check the settings, then serve until interrupted."""
    parser = argparse.ArgumentParser(
        prog="mini-sandbox-fileserver",
        description=(
            "Serve SHARED_DATA_DIR over HTTP. Configuration comes from the environment: "
            "SHARED_DATA_DIR, FILE_SERVER_TOKEN, FILE_SERVER_MAX_UPLOAD_BYTES, "
            "FILE_SERVER_AUTH_DISABLED, FILE_SERVER_CHUNK_BYTES, FILE_SERVER_FSYNC, "
            "FILE_SERVER_ALLOWED_HOSTS, SANDBOX_ALLOWED_HOSTS."
        ),
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("FILE_SERVER_HOST", "127.0.0.1"),
        help="address to bind (default: $FILE_SERVER_HOST or 127.0.0.1)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("FILE_SERVER_PORT", "8080")),
        help="port to bind (default: $FILE_SERVER_PORT or 8080)",
    )
    parser.add_argument("--log-level", default="info", help="uvicorn log level")
    args = parser.parse_args(argv)

    # Fail before binding, with the reason on one line, rather than from inside the lifespan.
    try:
        settings = get_settings()
        settings.check_root()
    except ValidationError as exc:
        sys.exit(f"mini-sandbox-fileserver: {describe_invalid(exc)}")
    except RuntimeError as exc:
        sys.exit(f"mini-sandbox-fileserver: {exc}")

    uvicorn.run(
        "fileserver.app:app",
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        # The app writes its own JSON access log; uvicorn's would duplicate every line.
        access_log=False,
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
