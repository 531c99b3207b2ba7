"""``/files``: list, download, upload (raw or multipart) and delete, all under the root.

Every handler passes the client's path through ``paths.confine`` (reads) or
``paths.confine_entry`` (writes and deletes, which never act on a symlink) before anything else,
and the router-level ``require_token`` dependency runs before any handler reads a body.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import anyio
from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import JSONResponse

from fileserver import storage
from fileserver.auth import require_token
from fileserver.listing import DEFAULT_LIMIT, MAX_LIMIT, DirectoryPage, decode_cursor
from fileserver.models import ErrorBody, FileEntry, entry_json
from fileserver.paths import confine, confine_entry
from fileserver.settings import Settings, app_settings
from fileserver.transfer import (
    FileStreamResponse,
    JsonArrayStreamResponse,
    receive_multipart,
    receive_to_file,
)

SettingsDep = Annotated[Settings, Depends(app_settings)]


_ERROR_DESCRIPTIONS = {
    400: "Unsafe or malformed path, or a request that does not fit the target",
    401: "Missing or invalid bearer token",
    403: "The path resolves outside the shared directory",
    404: "Not found",
    409: "Conflicts with what is on disk (e.g. writing over a directory or a symlink)",
    413: "Upload larger than FILE_SERVER_MAX_UPLOAD_BYTES",
    415: "Unsupported request media type",
    421: "The Host header names a server this is not (DNS rebinding defence)",
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


# 400 and 421 also come from the Host allow-list, before routing.
_PATH_ERRORS = (400, 401, 403, 404, 409, 421)

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


# Entries stat'ed and encoded per worker-thread hop while a listing streams.
_LISTING_BATCH = 256

_LISTING_DESCRIPTION = f"""
One page of a directory, sorted by name: a JSON array of entries, the body an unpaginated
listing would have, so a client that reads a small directory in one page needs no change.

**Pagination.** At most `limit` entries per page (default {DEFAULT_LIMIT}, at most {MAX_LIMIT}).
When more entries follow, the response carries the next page's address in
`Link: <?path=…&limit=…&cursor=…>; rel="next"` (a reference relative to this request's URL, RFC
8288) and its cursor alone in `X-Next-Cursor`; the last page has neither. A page may hold fewer
than `limit` entries although more follow, so the listing is complete only when a page comes
without them. Reading the pages in order yields every entry that exists throughout exactly once,
even while the directory changes. Each page costs one pass over the directory, so to read a large
directory whole, ask for large pages.
"""

_NEXT_PAGE_HEADERS = {
    "Link": {
        "description": 'The next page, as `<?query>; rel="next"`; absent on the last page.',
        "schema": {"type": "string"},
    },
    "X-Next-Cursor": {
        "description": "The `cursor` of the next page; absent on the last page.",
        "schema": {"type": "string"},
    },
}


def _next_page_headers(path: str, limit: int, cursor: str | None) -> dict[str, str]:
    if cursor is None:
        return {}
    query: dict[str, str | int] = {"path": path} if path else {}
    query.update(limit=limit, cursor=cursor)
    link = "<?" + urlencode(query, quote_via=quote) + '>; rel="next"'
    return {"link": link, "x-next-cursor": cursor}


@router.get(
    "",
    summary="List a directory, one page at a time",
    description=_LISTING_DESCRIPTION,
    response_model=list[FileEntry],
    responses={
        200: {"description": "One page of entries", "headers": _NEXT_PAGE_HEADERS},
        **_errors(*_PATH_ERRORS),
    },
)
async def list_files(
    settings: SettingsDep,
    path: Annotated[str, Query(description="Directory relative to the root; empty = root")] = "",
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="Most entries in this page")
    ] = DEFAULT_LIMIT,
    cursor: Annotated[
        str,
        Query(
            description=(
                "Opaque: the `X-Next-Cursor` of the previous page; empty or absent for the first "
                "page. A malformed cursor is refused with 400."
            )
        ),
    ] = "",
) -> Response:
    target = confine(settings.root, path)
    after = decode_cursor(cursor) if cursor else None
    page = await anyio.to_thread.run_sync(
        partial(DirectoryPage.open, target, after=after, limit=limit)
    )

    def next_batch() -> list[bytes]:
        return [entry_json(entry) for entry in page.describe(_LISTING_BATCH)]

    return JsonArrayStreamResponse(
        next_batch, page.close, headers=_next_page_headers(path, limit, page.next_cursor)
    )


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
    summary="Write a file from the raw request body (atomic; creates parents; never a symlink)",
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
    target = confine_entry(settings.root, path)
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
    summary="Delete a file or an empty directory (never a symlink)",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=_errors(*_PATH_ERRORS),
)
async def delete_file(path: str, settings: SettingsDep) -> Response:
    target = confine_entry(settings.root, path)
    await anyio.to_thread.run_sync(storage.delete, target)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
