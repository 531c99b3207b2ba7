"""Path confinement: the one gate between a client-supplied path and the filesystem.

``confine`` validates the text of a path and resolves it against the root; every endpoint calls
it (or ``confine_entry``, its variant for writes) before touching anything. ``open_directory``
then walks the resolved components from the root with ``O_NOFOLLOW`` so that a symlink swapped in
after ``confine`` (kernels can write to the shared volume concurrently) makes the operation fail
instead of escaping the root.

Symlinks: reads (download, listing) follow a link whose target lies inside the root. Writes and
deletes resolve only the *directory* part of the path (as POSIX ``rename``/``unlink`` do) and keep
the final component as named; ``storage`` then refuses to write over or delete an entry that is
a symlink, wherever it points, so no write route ever acts on a link's target.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from fileserver.errors import OutsideRootError, UnsafePathError

# Linux NAME_MAX and PATH_MAX, in bytes of the encoded name.
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
# Uploads are staged under this prefix next to their destination; listings hide such files.
TEMP_PREFIX = ".fileserver-upload-"

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Enough rounds to peel %25-encoding stacked by proxies; more rounds would not change the answer
# for anything short of a deliberately deep encoding, which is refused below.
_MAX_DECODE_ROUNDS = 4
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class ConfinedPath:
    """A path proven to lie inside ``root``.

    ``parts`` are real directory entries (no symlinks), except the final one of a path from
    ``confine_entry``, which is the entry as named and may itself be a symlink.
    """

    root: Path
    parts: tuple[str, ...]

    @property
    def absolute(self) -> Path:
        """The absolute filesystem path."""
        return self.root.joinpath(*self.parts)

    @property
    def relative(self) -> str:
        """The path relative to the root, POSIX style; ``""`` for the root itself."""
        return "/".join(self.parts)

    @property
    def is_root(self) -> bool:
        """True when the path designates the root directory itself."""
        return not self.parts

    @property
    def name(self) -> str:
        """The final component; raises ``UnsafePathError`` for the root."""
        if not self.parts:
            raise UnsafePathError("the path must name an entry below the root, not the root")
        return self.parts[-1]

    @property
    def parent_parts(self) -> tuple[str, ...]:
        """The components of the containing directory."""
        return self.parts[:-1]


def _check_text(text: str) -> None:
    if _CONTROL.search(text):
        raise UnsafePathError("path contains NUL or control characters")
    if "\\" in text:
        raise UnsafePathError("path contains a backslash")
    if "\ufffd" in text:
        # The server decodes the URL as UTF-8 with replacement, so this marks bytes that were not
        # valid UTF-8 (e.g. the overlong %c0%ae encoding of '.').
        raise UnsafePathError("path is not valid UTF-8")
    if text.startswith("/"):
        raise UnsafePathError("path must be relative to the shared directory")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise UnsafePathError(f"path is longer than {MAX_PATH_BYTES} bytes")
    body = text[:-1] if text.endswith("/") else text
    if not body:
        return
    for segment in body.split("/"):
        if segment == "":
            raise UnsafePathError("path contains an empty segment ('//')")
        if segment in (".", ".."):
            raise UnsafePathError("path contains a '.' or '..' segment")
        if len(segment.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise UnsafePathError(f"a path segment is longer than {MAX_NAME_BYTES} bytes")


def _check(raw: str) -> None:
    text = raw
    for _ in range(_MAX_DECODE_ROUNDS):
        _check_text(text)
        decoded = unquote(text, errors="replace") if "%" in text else text
        if decoded == text:
            return
        text = decoded
    raise UnsafePathError("path is percent-encoded too many times")


def _resolve(root: Path, relative: str) -> tuple[str, ...]:
    candidate = root.joinpath(relative) if relative else root
    resolved = Path(os.path.realpath(candidate))
    if resolved != root and not resolved.is_relative_to(root):
        raise OutsideRootError("path resolves outside the shared directory")
    return resolved.relative_to(root).parts


def confine(root: Path, raw: str) -> ConfinedPath:
    """Validate a client-supplied relative path and resolve it inside ``root``.

    ``root`` must already be resolved. Refuses NUL and control characters, backslashes,
    absolute paths, ``.``/``..`` segments, empty segments, names longer than NAME_MAX, paths longer
    than PATH_MAX, invalid UTF-8, and any of these hidden under further rounds of
    percent-encoding (``UnsafePathError``, 400); refuses paths that resolve through a symlink to
    outside the root (``OutsideRootError``, 403). Touches nothing but ``realpath``'s lookups.
    ``""`` designates the root itself.
    """
    _check(raw)
    return ConfinedPath(root=root, parts=_resolve(root, raw.rstrip("/")))


def confine_entry(root: Path, raw: str) -> ConfinedPath:
    """``confine`` for writes and deletes: the directory part is resolved, the final component
    is kept as named (not followed if it is a symlink).

    Same refusals as ``confine`` for the text and for a directory part that leaves the root.
    """
    _check(raw)
    body = raw.rstrip("/")
    if not body:
        return ConfinedPath(root=root, parts=())
    parent, _, name = body.rpartition("/")
    return ConfinedPath(root=root, parts=(*_resolve(root, parent), name))


def walk_directories(start_fd: int, parts: Sequence[str], *, create: bool = False) -> int:
    """From the directory ``start_fd`` (consumed: closed here), open ``parts`` without following
    symlinks and return the fd of the last one.

    With ``create``, missing directories are made on the way. Raises ``OSError`` (``ELOOP`` or
    ``ENOTDIR`` when a component is, or has become, a symlink or a file).
    """
    fd = start_fd
    try:
        for part in parts:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, dir_fd=fd)
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_directory(root: Path, parts: Sequence[str], *, create: bool = False) -> int:
    """Open the directory ``root/parts`` without following symlinks; return its fd."""
    return walk_directories(os.open(root, _DIR_FLAGS), parts, create=create)


def open_deepest_existing(root: Path, parts: Sequence[str]) -> tuple[int, tuple[str, ...]]:
    """Open the deepest existing directory along ``root/parts`` (no symlinks followed).

    Returns its fd and the components below it that do not exist yet.
    """
    fd = os.open(root, _DIR_FLAGS)
    try:
        for index, part in enumerate(parts):
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                return fd, tuple(parts[index:])
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd, ()
