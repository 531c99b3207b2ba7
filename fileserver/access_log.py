"""JSON-lines access log, written by a pure ASGI middleware.

Only the method, the decoded path, the status, the duration, the byte counts and the client
address are recorded: never headers (the token travels in ``Authorization``) and never the query
string (where a misconfigured client might put one).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import datetime, timezone

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ACCESS_LOGGER = "fileserver.access"
# Bounds a log line when a client sends an absurd path.
_MAX_LOGGED_PATH = 1024


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per record: timestamp, level, logger, message and the ``fields`` extra."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            payload.update(fields)
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False)


def configure_logging(level: int = logging.INFO) -> None:
    """Send the ``fileserver`` loggers to stderr as JSON lines (idempotent)."""
    logger = logging.getLogger("fileserver")
    if any(getattr(h, "_fileserver_json", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLinesFormatter())
    handler._fileserver_json = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    # uvicorn's own access log prints the query string, where a misconfigured client may put
    # the token; this middleware's log replaces it. uvicorn configures its loggers before it
    # imports the app, so this setting sticks.
    logging.getLogger("uvicorn.access").disabled = True


class AccessLogMiddleware:
    """Logs one ``access`` record per HTTP request once its response is finished."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.logger = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = {"status": 500, "in": 0, "out": 0}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["in"] += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body":
                state["out"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            client = scope.get("client")
            self.logger.info(
                "access",
                extra={
                    "fields": {
                        "method": scope["method"],
                        "path": scope["path"][:_MAX_LOGGED_PATH],
                        "status": state["status"],
                        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                        "bytes_in": state["in"],
                        "bytes_out": state["out"],
                        "client": client[0] if client else None,
                    }
                },
            )
