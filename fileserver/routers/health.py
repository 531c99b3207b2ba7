"""``GET /health``: liveness, without authentication."""

from __future__ import annotations

from fastapi import APIRouter

from fileserver.models import Health

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness probe (no token needed)")
async def health() -> Health:
    return Health(status="ok")
