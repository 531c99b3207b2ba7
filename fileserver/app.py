"""Application wiring: routers, error handlers, Host allow-list, access log, startup checks.

No endpoint logic.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from fileserver.access_log import AccessLogMiddleware, configure_logging
from fileserver.errors import FileServerError
from fileserver.hosts import HostAllowListMiddleware
from fileserver.routers import files, health
from fileserver.settings import Settings, describe_invalid, settings_of

logger = logging.getLogger("fileserver")


def _effective_settings(app: FastAPI) -> Settings:
    try:
        settings = settings_of(app)
    except ValidationError as exc:
        raise RuntimeError(f"invalid file server settings: {describe_invalid(exc)}") from None
    settings.check_root()
    return settings


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    try:
        settings = _effective_settings(app)
    except RuntimeError as exc:
        logger.error("refusing to start", extra={"fields": {"reason": str(exc)}})
        raise
    if settings.auth_disabled:
        logger.warning(
            "authentication disabled by FILE_SERVER_AUTH_DISABLED: anyone who can reach this "
            "server can read, write and delete the shared directory"
        )
    logger.info(
        "started",
        extra={
            "fields": {
                "root": str(settings.root),
                "auth": not settings.auth_disabled,
                "max_upload_bytes": settings.max_upload_bytes,
                "allowed_hosts": sorted(settings.host_allow_list),
            }
        },
    )
    yield


async def _file_server_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FileServerError)
    if exc.status_code >= 500:
        logger.error("request failed", extra={"fields": {"detail": exc.detail}})
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error")
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application with ``settings``, or with the environment's (read once) if None.

    The same settings serve the startup checks, the Host allow-list and every route.
    """
    configure_logging()
    app = FastAPI(
        title="mini-jupyter-sandbox file server",
        version="0.1.0",
        summary="Token-authenticated access to the sandbox's shared directory.",
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.include_router(health.router)
    app.include_router(files.router)
    app.add_exception_handler(FileServerError, _file_server_error)
    app.add_exception_handler(Exception, _unexpected_error)
    # The last middleware added is the outermost: the access log also records Host refusals.
    app.add_middleware(
        HostAllowListMiddleware, allowed_hosts=lambda: settings_of(app).host_allow_list
    )
    app.add_middleware(AccessLogMiddleware)
    return app


app = create_app()
