"""Bearer-token authentication as a FastAPI dependency."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fileserver.settings import Settings, app_settings

# auto_error=False: FastAPI's own error would be 403 without WWW-Authenticate; SPEC §4 wants 401.
_bearer = HTTPBearer(auto_error=False, description="FILE_SERVER_TOKEN as a bearer token")


def require_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    settings: Annotated[Settings, Depends(app_settings)],
) -> None:
    """Reject the request with 401 unless it carries ``Authorization: Bearer <token>``."""
    if settings.auth_disabled:
        return
    expected = settings.token.get_secret_value().encode() if settings.token else b""
    presented = credentials.credentials.encode() if credentials is not None else b""
    # compare_digest takes time independent of where the first differing byte is.
    if not expected or not hmac.compare_digest(presented, expected):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
