"""Which bytes of the notebook root the notebook serves, and how: no link followed, nothing run.

The notebook root holds ``shared-data/``, the shared volume every kernel mounts writable, so any
byte there may be a kernel's (SPEC §5a) - and a kernel can put a symbolic link there that points
anywhere in the notebook's container: ``/proc/self/environ`` (the gateway's address and token),
``/etc/passwd``, the notebook's home and its ``~/.jupyter`` (a config file there is code the
server runs at its next start).  Two rules, for the whole root, not only the shared tree (a
kernel's files get copied or moved out of it, and one rule is easier to trust than two):

- **No symbolic link is followed**, for reading, writing, listing or serving.  A link inside
  the root that points inside it would be safe to follow, but nothing needs one (the shared
  volume is a mount, not a link), and "inside" would have to be re-checked after every
  resolution, so the rule is plainer: a link is never served.  Reads open every component of
  the path with ``O_NOFOLLOW`` relative to its parent's descriptor (:func:`open_beneath`), so a
  kernel swapping a directory for a link while the notebook reads gains nothing; other
  operations check the path first (:func:`first_link`).  Only regular files are read: a FIFO a
  kernel left would hold a server thread forever.
- **Nothing is served as something a browser runs** (:func:`inline_type`): the page's policy
  allows scripts from its own origin, and ``<script src>``, ``<link rel=stylesheet>``, module
  imports and workers ignore ``Content-Disposition``; only the type, with ``nosniff``, makes the
  browser refuse.  So raster images keep their type (Markdown ``![](shared-data/plot.png)``
  still renders; an image type never runs as script, style or document), and every other file
  is an ``application/octet-stream`` download - HTML, SVG, JavaScript, CSS and text alike.
  The user still sees text files in the editor (the contents API, JSON) and downloads the rest.

No Jupyter import here: the rules are plain file-system code, tested on their own.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import PurePosixPath

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

#: Served inline, with their own type: raster images, which no browser runs as code.
RASTER_IMAGES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
    ".avif": "image/avif",
}
#: Everything else: bytes to download, never a script, a style sheet or a document.
DOWNLOAD_TYPE = "application/octet-stream"


class NotServed(Exception):
    """A path the notebook refuses to serve (a link, or not a regular file); the message says
    which component and why."""


def _components(relative: str) -> list[str]:
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts:
        raise NotServed(f"{relative}: not a path inside the notebook root")
    return [part for part in path.parts if part != "."]


def first_link(root: str, relative: str) -> str | None:
    """The first component of ``relative`` (under ``root``) that is a symbolic link, if any.

    Components that do not exist yet (a file about to be created) end the walk: nothing below
    them exists either.
    """
    current = root
    walked: list[str] = []
    for part in _components(relative):
        current = os.path.join(current, part)
        walked.append(part)
        try:
            mode = os.lstat(current).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISLNK(mode):
            return "/".join(walked)
    return None


def _refusal(walked: list[str], error: OSError, parent: int, part: str) -> NotServed | OSError:
    """What a failed ``O_NOFOLLOW`` open means: a link (refused), or the error it was."""
    if error.errno in (errno.ELOOP, errno.ENOTDIR):
        try:
            if stat.S_ISLNK(os.lstat(part, dir_fd=parent).st_mode):
                return NotServed(f"{'/'.join(walked)}: a symbolic link, which is never followed")
        except OSError:
            pass
    return error


def open_beneath(root: str, relative: str) -> int:
    """A read-only descriptor of the regular file ``relative`` under ``root``, no link followed.

    Raises :class:`NotServed` for a link anywhere on the way or a file that is not regular, and
    the ``OSError`` of the open otherwise (``FileNotFoundError``...).
    """
    parts = _components(relative)
    if not parts:
        raise NotServed(f"{relative or '.'}: not a regular file")
    descriptor = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for index, part in enumerate(parts):
            flags = _FILE if index == len(parts) - 1 else _DIRECTORY
            try:
                child = os.open(part, flags, dir_fd=descriptor)
            except OSError as error:
                raise _refusal(parts[: index + 1], error, descriptor, part) from None
            os.close(descriptor)
            descriptor = child
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise NotServed(f"{relative}: not a regular file")
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def read_chunks(
    descriptor: int, start: int | None, end: int | None, size: int = 1 << 16
) -> Iterator[bytes]:
    """Bytes ``start`` to ``end`` (exclusive; None: the whole file) of an open file."""
    position = start or 0
    while end is None or position < end:
        wanted = size if end is None else min(size, end - position)
        chunk = os.pread(descriptor, wanted, position)
        if not chunk:
            return
        position += len(chunk)
        yield chunk


def inline_type(name: str) -> str | None:
    """The type ``name`` is served inline with, or None: served as a download
    (:data:`DOWNLOAD_TYPE`).  By extension only - with ``nosniff`` the browser believes it."""
    return RASTER_IMAGES.get(PurePosixPath(name).suffix.lower())
