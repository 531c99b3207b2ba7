"""``/files``: list, download, upload (raw or multipart) and delete, all under the root.

Every handler passes the client's path through ``paths.confine`` before anything else, and the
router-level ``require_token`` dependency runs before any handler reads a body.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import JSONResponse

from fileserver import storage
from fileserver.auth import require_token
from fileserver.models import ErrorBody, FileEntry
from fileserver.paths import confine
from fileserver.settings import Settings, get_settings
from fileserver.transfer import FileStreamResponse, receive_multipart, receive_to_file

SettingsDep = Annotated[Settings, Depends(get_settings)]


_ERROR_DESCRIPTIONS = {
    400: "Unsafe or malformed path, or a request that does not fit the target",
    401: "Missing or invalid bearer token",
    403: "The path resolves outside the shared directory",
    404: "Not found",
    409: "Conflicts with what is on disk",
    413: "Upload larger than FILE_SERVER_MAX_UPLOAD_BYTES",
    415: "Unsupported request media type",
    507: "No space left on the shared volume",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody, "description": _ERROR_DESCRIPTIONS[code]} for code in codes}


def _json_errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    # For routes whose own media type is not JSON: FastAPI files a ``model`` under the route's
    # media type, so the JSON content is spelled out (the schema is registered by _errors).
    schema = {"$ref": "#/components/schemas/ErrorBody"}
    return {
        code: {
            "description": _ERROR_DESCRIPTIONS[code],
            "content": {"application/json": {"schema": schema}},
        }
        for code in codes
    }


_PATH_ERRORS = (400, 401, 403, 404, 409)

router = APIRouter(
    prefix="/files",
    tags=["files"],
    dependencies=[Depends(require_token)],
)

_WRITTEN: dict[int | str, dict[str, Any]] = {
    200: {"model": FileEntry, "description": "Replaced an existing file"},
    201: {"model": FileEntry, "description": "Created a new file"},
}


def _written(entry: storage.EntryInfo, created: bool) -> JSONResponse:
    return JSONResponse(
        FileEntry.of(entry).model_dump(mode="json"),
        status_code=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
    )


@router.get("", summary="List a directory", responses=_errors(*_PATH_ERRORS))
async def list_files(
    settings: SettingsDep,
    path: Annotated[str, Query(description="Directory relative to the root; empty = root")] = "",
) -> list[FileEntry]:
    target = confine(settings.root, path)
    entries = await anyio.to_thread.run_sync(storage.list_directory, target)
    return [FileEntry.of(entry) for entry in entries]


@router.get(
    "/{path:path}",
    summary="Download a file",
    status_code=status.HTTP_200_OK,
    response_class=FileStreamResponse,
    responses={
        200: {
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            }
        },
        **_json_errors(*_PATH_ERRORS),
    },
)
async def download_file(path: str, settings: SettingsDep) -> FileStreamResponse:
    target = confine(settings.root, path)
    fd, size = await anyio.to_thread.run_sync(storage.open_for_reading, target)
    return FileStreamResponse(fd, size, target.name, settings.chunk_bytes)


@router.put(
    "/{path:path}",
    summary="Write a file from the raw request body (atomic; creates parents)",
    status_code=status.HTTP_201_CREATED,
    responses={**_WRITTEN, **_errors(*_PATH_ERRORS, 413, 507)},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def put_file(path: str, request: Request, settings: SettingsDep) -> JSONResponse:
    target = confine(settings.root, path)
    created = await receive_to_file(
        request,
        target,
        limit=settings.max_upload_bytes,
        chunk_bytes=settings.chunk_bytes,
        fsync=settings.fsync,
    )
    entry = await anyio.to_thread.run_sync(storage.stat_entry, target)
    return _written(entry, created)


_MULTIPART_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


async def _upload(path: str, request: Request, settings: Settings) -> JSONResponse:
    directory = confine(settings.root, path)
    written, created = await receive_multipart(
        request,
        directory,
        limit=settings.max_upload_bytes,
        chunk_bytes=settings.chunk_bytes,
        fsync=settings.fsync,
    )
    entry = await anyio.to_thread.run_sync(storage.stat_entry, written)
    return _written(entry, created)


@router.post(
    "",
    summary="Upload a multipart 'file' into the root directory",
    status_code=status.HTTP_201_CREATED,
    responses={**_WRITTEN, **_errors(*_PATH_ERRORS, 413, 415, 507)},
    openapi_extra=_MULTIPART_BODY,
)
async def upload_to_root(request: Request, settings: SettingsDep) -> JSONResponse:
    return await _upload("", request, settings)


@router.post(
    "/{path:path}",
    summary="Upload a multipart 'file' into a directory (created if missing)",
    status_code=status.HTTP_201_CREATED,
    responses={**_WRITTEN, **_errors(*_PATH_ERRORS, 413, 415, 507)},
    openapi_extra=_MULTIPART_BODY,
)
async def upload_file(path: str, request: Request, settings: SettingsDep) -> JSONResponse:
    return await _upload(path, request, settings)


@router.delete(
    "/{path:path}",
    summary="Delete a file or an empty directory",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=_errors(*_PATH_ERRORS),
)
async def delete_file(path: str, settings: SettingsDep) -> Response:
    target = confine(settings.root, path)
    await anyio.to_thread.run_sync(storage.delete, target)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
