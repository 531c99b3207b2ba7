"""``GET /health``: liveness, without authentication."""

from __future__ import annotations

from fastapi import APIRouter

from fileserver.models import ErrorBody, Health

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    summary="Liveness probe (no token needed; the Host allow-list applies)",
    responses={
        400: {"model": ErrorBody, "description": "Missing or malformed Host header"},
        421: {"model": ErrorBody, "description": "The Host header names another server"},
    },
)
async def health() -> Health:
    return Health(status="ok")
