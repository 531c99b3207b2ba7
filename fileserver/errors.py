"""Errors the file server turns into JSON ``{"detail": ...}`` responses.

    FileServerError            (500, root; never raised itself)
    ├── UnsafePathError        400  malformed or traversal path
    ├── BadRequestError        400  well-formed path, wrong kind of object or bad body
    ├── OutsideRootError       403  the path resolves (through a symlink) outside the root
    ├── NotFoundError          404
    ├── ConflictError          409  e.g. writing over a directory, deleting a non-empty one
    ├── PayloadTooLargeError   413
    ├── UnsupportedMediaError  415
    └── InsufficientStorageError 507

They carry no FastAPI dependency so that ``paths`` and ``storage`` stay plain Python and can be
tested without an application.
"""

from __future__ import annotations


class FileServerError(Exception):
    """Root of the file server's errors; ``status_code`` is the HTTP status to answer with."""

    status_code = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class UnsafePathError(FileServerError):
    """The requested path is malformed or tries to leave the root."""

    status_code = 400


class BadRequestError(FileServerError):
    """The request is well-formed but cannot be applied (wrong kind of object, bad body)."""

    status_code = 400


class OutsideRootError(FileServerError):
    """The path resolves, through a symlink, to somewhere outside the root."""

    status_code = 403


class NotFoundError(FileServerError):
    """Nothing exists at the path."""

    status_code = 404


class ConflictError(FileServerError):
    """The filesystem state conflicts with the request."""

    status_code = 409


class PayloadTooLargeError(FileServerError):
    """The upload exceeds ``FILE_SERVER_MAX_UPLOAD_BYTES``."""

    status_code = 413


class UnsupportedMediaError(FileServerError):
    """The request body is not of a media type the endpoint accepts."""

    status_code = 415


class InsufficientStorageError(FileServerError):
    """The shared volume is full."""

    status_code = 507
