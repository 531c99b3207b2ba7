"""Filesystem operations on confined paths, all relative to directory fds.

Every function takes a ``ConfinedPath`` from ``paths.confine`` and reaches it through
``paths.open_directory`` plus ``*at``-style calls with ``O_NOFOLLOW``, so the check and the use
refer to the same directory even while kernels change the shared volume. Functions here block;
callers run them in a worker thread.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timezone

from fileserver.errors import (
    BadRequestError,
    ConflictError,
    FileServerError,
    InsufficientStorageError,
    NotFoundError,
    OutsideRootError,
)
from fileserver.paths import (
    TEMP_PREFIX,
    ConfinedPath,
    confine,
    open_deepest_existing,
    open_directory,
    walk_directories,
)

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# writev takes at most IOV_MAX (1024 on Linux) buffers per call.
_IOV_MAX = 1024


@dataclass(frozen=True)
class EntryInfo:
    """What a listing or a write reports about one directory entry."""

    name: str
    path: str
    size: int
    is_dir: bool
    modified: datetime


def translate_os_error(exc: OSError, what: str) -> FileServerError:
    """Map an ``OSError`` met while handling ``what`` to the error the client should see."""
    code = exc.errno
    if code == errno.ENOENT:
        return NotFoundError(f"{what}: not found")
    if code == errno.ELOOP:
        # O_NOFOLLOW met a symlink that appeared after confinement.
        return OutsideRootError(f"{what}: a path component is a symlink")
    if code == errno.EXDEV:
        return ConflictError(f"{what}: crosses a mount point inside the shared directory")
    if code in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.ENOTEMPTY):
        return ConflictError(f"{what}: {os.strerror(code)}")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ConflictError(f"{what}: permission denied by the filesystem")
    if code == errno.ENAMETOOLONG:
        return BadRequestError(f"{what}: name too long")
    if code in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorageError(f"{what}: no space left on the shared volume")
    return FileServerError(f"{what}: {os.strerror(code) if code else 'I/O error'}")


@contextmanager
def _directory(target: ConfinedPath) -> Iterator[int]:
    try:
        fd = open_directory(target.root, target.parent_parts)
    except OSError as exc:
        raise translate_os_error(exc, target.relative) from None
    try:
        yield fd
    finally:
        os.close(fd)


def refuse_symlink(target: ConfinedPath) -> ConflictError:
    """The error for a write or delete whose final component is a symlink."""
    return ConflictError(
        f"{target.relative}: is a symbolic link; the file server never writes or deletes "
        "through a link, nor replaces one"
    )


def _modified(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime, tz=timezone.utc)


def entry_info(path: ConfinedPath, st: os.stat_result) -> EntryInfo:
    """What the API reports about ``path``, from its ``stat``."""
    return EntryInfo(
        name=path.parts[-1] if path.parts else "",
        path=path.relative,
        size=st.st_size if stat.S_ISREG(st.st_mode) else 0,
        is_dir=stat.S_ISDIR(st.st_mode),
        modified=_modified(st),
    )


def stat_through_link(link: ConfinedPath) -> os.stat_result:
    """``stat`` of what the symlink ``link`` designates, if that lies inside the root.

    Resolves with ``confine`` and reaches the target without following further links, so a link
    swapped meanwhile cannot make it report on something outside the root. Raises
    ``FileServerError`` for links that escape, dangle or loop.
    """
    inner = confine(link.root, link.relative)
    if inner.is_root:
        return os.stat(inner.root)
    with _directory(inner) as dir_fd:
        try:
            st = os.stat(inner.name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError as exc:
            raise translate_os_error(exc, link.relative) from None
    if stat.S_ISLNK(st.st_mode):
        raise OutsideRootError(f"{link.relative}: the link changed while being resolved")
    return st


def open_for_reading(target: ConfinedPath) -> tuple[int, int]:
    """Open a regular file; return ``(fd, size)``. The caller closes the fd."""
    with _directory(target) as dir_fd:
        try:
            # O_NONBLOCK so that a FIFO planted in the shared volume cannot hang the server.
            fd = os.open(target.name, _READ_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            raise translate_os_error(exc, target.relative) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise BadRequestError(f"{target.relative}: is a directory; list it with GET /files")
        if not stat.S_ISREG(st.st_mode):
            raise BadRequestError(f"{target.relative}: not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def delete(target: ConfinedPath) -> None:
    """Remove a file, or an empty directory; refuse a symlink (``target`` from ``confine_entry``).

    If a kernel swaps the entry for a symlink after the check, ``unlink`` removes that link
    itself: it never follows one.
    """
    with _directory(target) as dir_fd:
        name = target.name
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                raise refuse_symlink(target)
            if stat.S_ISDIR(st.st_mode):
                os.rmdir(name, dir_fd=dir_fd)
            else:
                os.unlink(name, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ENOTEMPTY:
                raise ConflictError(f"{target.relative}: directory is not empty") from None
            raise translate_os_error(exc, target.relative) from None


def stat_entry(target: ConfinedPath) -> EntryInfo:
    """Describe one entry."""
    with _directory(target) as dir_fd:
        try:
            st = os.stat(target.name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError as exc:
            raise translate_os_error(exc, target.relative) from None
    return entry_info(target, st)


class AtomicWriter:
    """Stages a file in the destination's directory and renames it into place on ``commit``.

    Readers see either the old file or the complete new one, concurrent writers each stage their
    own file so the last rename wins whole, and ``abort`` leaves nothing behind. Missing parent
    directories are only created at ``commit``: until then the file is staged in the deepest
    directory that exists, so a failed upload does not leave empty directories either.

    A destination that is a symlink is refused, by ``open`` (before any body is read) and again
    by ``commit``; ``target`` comes from ``confine_entry`` so that its name is the link's own.
    """

    def __init__(self, target: ConfinedPath, *, fsync: bool = False) -> None:
        self.target = target
        self._fsync = fsync
        self._dir_fd = -1
        self._missing: tuple[str, ...] = ()
        self._fd = -1
        self._temp_name = ""

    def open(self) -> None:
        """Create the staging file."""
        # Validates that the target is not the root before creating anything.
        _ = self.target.name
        try:
            self._dir_fd, self._missing = open_deepest_existing(
                self.target.root, self.target.parent_parts
            )
            if not self._missing:
                self._check_destination(self._dir_fd)
            self._temp_name = f"{TEMP_PREFIX}{secrets.token_hex(8)}"
            self._fd = os.open(self._temp_name, _TEMP_FLAGS, 0o666, dir_fd=self._dir_fd)
        except OSError as exc:
            self.abort()
            raise translate_os_error(exc, self.target.relative) from None
        except BaseException:
            self.abort()
            raise

    def write(self, chunks: Sequence[bytes | memoryview]) -> None:
        """Append ``chunks`` (one ``writev`` per ``IOV_MAX`` buffers, retried on short writes)."""
        try:
            for start in range(0, len(chunks), _IOV_MAX):
                pending = [memoryview(c) for c in chunks[start : start + _IOV_MAX] if len(c)]
                while pending:
                    written = os.writev(self._fd, pending)
                    while pending and written >= len(pending[0]):
                        written -= len(pending[0])
                        pending.pop(0)
                    if written:
                        pending[0] = pending[0][written:]
        except OSError as exc:
            raise translate_os_error(exc, self.target.relative) from None

    def commit(self) -> bool:
        """Rename the staged file over the destination; True when it did not exist before."""
        name = self.target.name
        try:
            if self._fsync:
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            final_fd = walk_directories(os.dup(self._dir_fd), self._missing, create=True)
            try:
                created = self._check_destination(final_fd)
                # A rename between two directories of one filesystem is as atomic as within one;
                # it replaces the entry itself, so a symlink planted after the check above is
                # replaced, never followed.
                os.replace(self._temp_name, name, src_dir_fd=self._dir_fd, dst_dir_fd=final_fd)
                self._temp_name = ""
                if self._fsync:
                    os.fsync(final_fd)
            finally:
                os.close(final_fd)
        except OSError as exc:
            raise translate_os_error(exc, self.target.relative) from None
        finally:
            self.abort()
        return created

    def _check_destination(self, dir_fd: int) -> bool:
        # Refuses a symlink or a directory there; True when nothing exists there yet.
        try:
            existing = os.stat(self.target.name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return True
        if stat.S_ISLNK(existing.st_mode):
            raise refuse_symlink(self.target)
        if stat.S_ISDIR(existing.st_mode):
            raise ConflictError(f"{self.target.relative}: is a directory")
        return False

    def abort(self) -> None:
        """Discard the staged file, if any, and release descriptors. Safe to call twice."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._temp_name and self._dir_fd >= 0:
            with suppress(FileNotFoundError):
                os.unlink(self._temp_name, dir_fd=self._dir_fd)
            self._temp_name = ""
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1
