"""Directory listings one page at a time, in memory bounded by the page, not the directory.

A page holds the ``limit`` smallest names greater than the cursor. ``os.scandir`` yields entries
in no particular order, and sorting them all would hold the whole directory in memory, so the page
is chosen in one pass with a bounded heap (``heapq.nsmallest``): O(entries) time and O(limit)
memory per request. Only the chosen names are then stat'ed, batch by batch, while the response is
streamed.

Pages are ordered by name, and the cursor is the last name of the previous page. Reading the
pages in order therefore yields every entry that exists throughout exactly once, even while
entries are created or removed meanwhile (those may or may not appear). The cursor is the name,
base64url-encoded: opaque to clients, and it grants nothing, since a forged one only moves the
starting point.

A page may hold fewer than ``limit`` entries although more follow (names chosen for it that
turned out to be staging files, escaping or dangling symlinks, or removed entries are left out):
the listing is complete only when a page comes without a next cursor.
"""

from __future__ import annotations

import base64
import binascii
import errno
import heapq
import os
import re
import stat
from collections.abc import Iterable
from operator import attrgetter

from fileserver.errors import BadRequestError, FileServerError
from fileserver.paths import MAX_NAME_BYTES, TEMP_PREFIX, ConfinedPath, open_directory
from fileserver.storage import EntryInfo, entry_info, stat_through_link, translate_os_error

DEFAULT_LIMIT = 1_000
MAX_LIMIT = 10_000

_CURSOR = re.compile(r"[A-Za-z0-9_-]+")
# base64 of the longest name, unpadded.
_MAX_CURSOR_CHARS = -(-MAX_NAME_BYTES * 4 // 3)


def encode_cursor(name: str) -> str:
    """The cursor that resumes a listing after ``name``."""
    # surrogateescape: names that are not valid UTF-8 still order the pages, so they round-trip.
    raw = name.encode("utf-8", "surrogateescape")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> str:
    """The name a cursor resumes after; ``BadRequestError`` for anything ``encode_cursor`` would
    not have produced."""
    invalid = BadRequestError(
        "invalid cursor: pass the next cursor of the previous page unchanged, or none to start"
    )
    if len(cursor) > _MAX_CURSOR_CHARS or not _CURSOR.fullmatch(cursor) or len(cursor) % 4 == 1:
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raise invalid from None
    name = raw.decode("utf-8", "surrogateescape")
    # The re-encoding check refuses non-canonical spellings (stray low bits in the last digit).
    if len(raw) > MAX_NAME_BYTES or b"/" in raw or b"\0" in raw or encode_cursor(name) != cursor:
        raise invalid
    return name


def _is_utf8(name: str) -> bool:
    if name.isascii():
        return True
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class DirectoryPage:
    """One page of a directory; holds the directory's fd until ``close``.

    Blocking: call ``open`` and ``describe`` from a worker thread.
    """

    def __init__(
        self, target: ConfinedPath, fd: int, names: list[str], next_cursor: str | None
    ) -> None:
        self.target = target
        self.next_cursor = next_cursor
        self._fd = fd
        self._pending = iter(names)

    @classmethod
    def open(cls, target: ConfinedPath, *, after: str | None, limit: int) -> DirectoryPage:
        """Choose the page of ``target`` that follows the name ``after`` (``None``: the first)."""
        if limit < 1:
            raise BadRequestError("limit must be at least 1")
        try:
            fd = open_directory(target.root, target.parts)
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                raise BadRequestError(f"{target.relative}: not a directory") from None
            raise translate_os_error(exc, target.relative or "/") from None
        try:
            with os.scandir(fd) as entries:
                names: Iterable[str] = map(attrgetter("name"), entries)
                if after is not None:
                    names = filter(after.__lt__, names)
                # One name beyond the page tells whether another page follows.
                chosen = heapq.nsmallest(limit + 1, names)
        except OSError as exc:
            os.close(fd)
            raise translate_os_error(exc, target.relative or "/") from None
        except BaseException:
            os.close(fd)
            raise
        next_cursor = encode_cursor(chosen[limit - 1]) if len(chosen) > limit else None
        return cls(target, fd, chosen[:limit], next_cursor)

    def describe(self, count: int) -> list[EntryInfo]:
        """The page's next ``count`` listable entries, in order; ``[]`` once the page is done."""
        batch: list[EntryInfo] = []
        for name in self._pending:
            info = self._describe(name)
            if info is not None:
                batch.append(info)
                if len(batch) >= count:
                    break
        return batch

    def _describe(self, name: str) -> EntryInfo | None:
        # Staging files are not entries yet; names that are not UTF-8 cannot be addressed through
        # the API (paths are UTF-8) nor carried in a JSON string.
        if name.startswith(TEMP_PREFIX) or not _is_utf8(name):
            return None
        path = ConfinedPath(self.target.root, (*self.target.parts, name))
        try:
            st = os.stat(name, dir_fd=self._fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                st = stat_through_link(path)
        except (FileServerError, OSError):
            # Escaping or dangling symlinks, and entries removed since the scan.
            return None
        return entry_info(path, st)

    def close(self) -> None:
        """Release the directory's fd; safe to call twice."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
