"""Response bodies, as published in the OpenAPI schema."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, TypeAdapter

from fileserver.storage import EntryInfo


class FileEntry(BaseModel):
    """One entry of the shared directory."""

    name: str = Field(description="The entry's name (last path component).")
    path: str = Field(description="Path relative to the shared directory, '/'-separated.")
    size: int = Field(description="Size in bytes; 0 for directories.")
    is_dir: bool
    modified: datetime = Field(description="Last modification time, UTC.")

    @classmethod
    def of(cls, info: EntryInfo) -> FileEntry:
        return cls(
            name=info.name,
            path=info.path,
            size=info.size,
            is_dir=info.is_dir,
            modified=info.modified,
        )


_ENTRY_JSON = TypeAdapter(EntryInfo)


def entry_json(info: EntryInfo) -> bytes:
    """``FileEntry.of(info)`` as JSON, serialised straight from the dataclass.

    Same bytes, without validating a model per entry: a listing page encodes thousands.
    """
    return _ENTRY_JSON.dump_json(info)


class Health(BaseModel):
    """Liveness answer."""

    status: str = "ok"


class ErrorBody(BaseModel):
    """Every error response."""

    detail: str
