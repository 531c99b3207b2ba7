"""Settings read from the environment (pydantic-settings).

Routes receive them through ``Depends(app_settings)``: the settings given to
:func:`fileserver.app.create_app`, else these read from the environment.
"""

from __future__ import annotations

import os
import string
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Request
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from fileserver.hosts import DEFAULT_ALLOWED_HOSTS
from sandbox_gateway.http.hosts import normalise_allowed_host

_TOKEN_CHARS = frozenset(string.printable) - frozenset(string.whitespace)


class Settings(BaseSettings):
    """File server configuration; every field comes from the environment variable named below."""

    model_config = SettingsConfigDict(
        env_prefix="FILE_SERVER_",
        validate_by_name=True,
        validate_by_alias=True,
        extra="ignore",
    )

    shared_data_dir: Path = Field(
        default=Path("/data/shared"),
        validation_alias=AliasChoices("SHARED_DATA_DIR"),
        description="SHARED_DATA_DIR: the root served; nothing outside it is ever touched.",
    )
    token: SecretStr | None = Field(
        default=None,
        description="FILE_SERVER_TOKEN: the bearer token every /files request must present.",
    )
    auth_disabled: bool = Field(
        default=False,
        description=(
            "FILE_SERVER_AUTH_DISABLED: set to true to serve WITHOUT authentication "
            "(local development only); the server refuses to start without a token otherwise."
        ),
    )
    max_upload_bytes: int = Field(
        default=1024**3,
        gt=0,
        description="FILE_SERVER_MAX_UPLOAD_BYTES: larger uploads are refused with 413.",
    )
    chunk_bytes: int = Field(
        # 4 MiB measured ~20% less server CPU per byte than 1 MiB for uploads, for 4 MiB of
        # memory per active transfer.
        default=4 * 1024 * 1024,
        ge=4096,
        le=64 * 1024 * 1024,
        description=(
            "FILE_SERVER_CHUNK_BYTES: unit of disk I/O for streamed bodies; bounds memory per "
            "request and amortises the thread hand-off per chunk."
        ),
    )
    fsync: bool = Field(
        default=False,
        description=(
            "FILE_SERVER_FSYNC: fsync uploads before the rename, for durability across power "
            "loss at the cost of upload throughput. Atomicity for readers holds either way."
        ),
    )

    # NoDecode: the environment gives a comma-separated list, not JSON.
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description=(
            "FILE_SERVER_ALLOWED_HOSTS: comma-separated host names (or IP literals, IPv6 in "
            "brackets; .example.org for the subdomains of example.org) this server answers to, "
            "besides localhost, 127.0.0.1, [::1], fileserver and the IP address a request "
            "arrives on; any port. Requests with another Host get 421 (DNS rebinding defence)."
        ),
    )
    sandbox_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        validation_alias=AliasChoices("SANDBOX_ALLOWED_HOSTS"),
        description=(
            "SANDBOX_ALLOWED_HOSTS: the same, shared by every service of the deployment; both "
            "lists are allowed."
        ),
    )

    @field_validator("allowed_hosts", "sandbox_allowed_hosts", mode="before")
    @classmethod
    def _split_host_list(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, (list, tuple)):
            return tuple(
                normalise_allowed_host(entry) if isinstance(entry, str) else entry
                for entry in value
                if not isinstance(entry, str) or entry.strip()
            )
        return value

    @model_validator(mode="after")
    def _require_token_unless_explicitly_disabled(self) -> Settings:
        secret = self.token.get_secret_value() if self.token is not None else ""
        if self.auth_disabled:
            if secret:
                raise ValueError(
                    "FILE_SERVER_TOKEN and FILE_SERVER_AUTH_DISABLED=true are both set; choose one"
                )
            return self
        if not secret:
            raise ValueError(
                "FILE_SERVER_TOKEN is not set: refusing to serve files without authentication "
                "(set FILE_SERVER_AUTH_DISABLED=true to run unauthenticated on purpose)"
            )
        # A token with whitespace (typically a trailing newline from a secret file) could never
        # match an Authorization header, so every request would fail with a confusing 401.
        if not set(secret) <= _TOKEN_CHARS:
            raise ValueError(
                "FILE_SERVER_TOKEN must be printable ASCII without whitespace "
                "(a trailing newline from a secret file is a common cause)"
            )
        return self

    @property
    def host_allow_list(self) -> frozenset[str]:
        """Every name a request's ``Host`` may carry (normalised, without port)."""
        return frozenset((*DEFAULT_ALLOWED_HOSTS, *self.allowed_hosts, *self.sandbox_allowed_hosts))

    @property
    def root(self) -> Path:
        """The served directory, fully resolved (symlinks in the configured path followed)."""
        return Path(os.path.realpath(self.shared_data_dir))

    def check_root(self) -> None:
        """Raise ``RuntimeError`` when the root is not an existing directory."""
        if not self.root.is_dir():
            raise RuntimeError(
                f"SHARED_DATA_DIR={self.shared_data_dir} is not an existing directory"
            )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the environment, read once per process."""
    return Settings()


def app_settings(request: Request) -> Settings:
    """The settings of the application serving ``request`` (a FastAPI dependency)."""
    return settings_of(request.app)


def settings_of(app: FastAPI) -> Settings:
    """The settings given to ``create_app``, or the environment's when none were given."""
    given: Settings | None = getattr(app.state, "settings", None)
    return given if given is not None else get_settings()


def describe_invalid(error: ValidationError) -> str:
    """The validation messages without the offending input values, which may hold the token."""
    return "; ".join(
        f"{'.'.join(str(part) for part in err['loc']) or 'settings'}: {err['msg']}"
        for err in error.errors(include_input=False, include_url=False)
    )
