"""Every route of the notebook that serves bytes of its root, under sandbox_notebook.paths' rules.

A kernel writes into ``shared-data/`` (the shared volume) and the notebook serves that tree on
its own origin, where the page's Content-Security-Policy allows scripts: without these rules,
``display(HTML('<script src="/files/shared-data/p.js">'))`` runs the kernel's script with the
page's ``_xsrf`` cookie, and a kernel's symbolic link reads ``/proc/self/environ`` through the
contents API or writes a config file into the notebook's ``~/.jupyter``.  The routes of
jupyter_server 2 / Notebook 7 / jupyterlab_server that hand out root bytes, and what holds each:

- ``/files/`` (:class:`SandboxFilesHandler`): raster images inline, everything else an
  ``application/octet-stream`` attachment; ``nosniff``; a response policy of
  ``default-src 'none'; sandbox`` (no ``allow-scripts``: a document opened from there, should a
  browser ever render one, runs nothing and has an opaque origin); read through
  :func:`~sandbox_notebook.paths.open_beneath`, no link followed.
- ``/nbconvert/<format>/<path>`` (:class:`SandboxNbconvertHandler`): the export of a notebook a
  kernel wrote is that kernel's bytes too - the "script" exporter serves the cells as
  ``text/javascript`` when the notebook's ``language_info`` says so.  Every export is an
  ``application/octet-stream`` download, under the same response policy.
- ``/api/contents`` (:class:`SandboxContentsManager`): JSON under the API's
  ``default-src 'none'``, never run; what it needs is the link rule, for every operation (read,
  save, rename, delete, copy, list: listings leave links out), and ``O_NOFOLLOW`` reads.
  ``/nbconvert/`` and ``/view/`` read through it; ``/view/`` only frames ``/files/``.
- Static routes (``/static/``, ``/lab/extensions/``, themes, ``/custom/``) serve the image's own
  files and the notebook's config and data directories, none of them in the kernel-writable tree.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from typing import Any

from jupyter_core.paths import is_file_hidden
from jupyter_server.base.handlers import AuthenticatedFileHandler
from jupyter_server.nbconvert import handlers as nbconvert_handlers
from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from tornado import web

from sandbox_notebook.paths import (
    DOWNLOAD_TYPE,
    NotServed,
    first_link,
    inline_type,
    open_beneath,
    read_chunks,
)

#: The policy of every response carrying root bytes: nothing loads, nothing runs, and a document
#: gets an opaque origin, whatever its type.
FILE_POLICY = "default-src 'none'; sandbox; frame-ancestors 'self'"


def _not_found(path: str, error: NotServed) -> web.HTTPError:
    return web.HTTPError(404, f"{path} is not served: {error}".replace("%", "%%"))


class SandboxFilesHandler(AuthenticatedFileHandler):
    """``/files/``: images as images, anything else a download; no link followed."""

    @property
    def content_security_policy(self) -> str:
        return FILE_POLICY

    def validate_absolute_path(self, root: str, absolute_path: str) -> str:
        root = os.path.abspath(root)
        relative = os.path.relpath(absolute_path, root)
        try:
            # Before tornado resolves links inside the root: none is followed here.
            descriptor = open_beneath(root, relative)
        except NotServed as error:
            raise _not_found(self.path, error) from None
        except OSError:
            raise web.HTTPError(404) from None
        # What is sent - bytes, size, date - comes from this descriptor, whatever the path
        # names by the time jupyter_server's own checks (hidden files) look at it.
        self._descriptor: int | None = descriptor
        self._opened = os.fstat(descriptor)
        return super().validate_absolute_path(root, absolute_path)

    def _stat(self) -> os.stat_result:
        return self._opened

    def get_content(  # type: ignore[override]
        self, abspath: str, start: int | None = None, end: int | None = None
    ) -> Iterator[bytes]:
        # tornado declares this a classmethod that opens ``abspath`` again; the descriptor
        # opened without following links is what is read instead.
        assert self._descriptor is not None
        return read_chunks(self._descriptor, start, end)

    def on_finish(self) -> None:
        descriptor = getattr(self, "_descriptor", None)
        if descriptor is not None:
            os.close(descriptor)
            self._descriptor = None
        super().on_finish()

    def get_content_type(self) -> str:
        assert self.absolute_path is not None
        return inline_type(self.absolute_path) or DOWNLOAD_TYPE

    def set_headers(self) -> None:
        super().set_headers()
        self.set_header("X-Content-Type-Options", "nosniff")
        assert self.absolute_path is not None
        if inline_type(self.absolute_path) is None:
            self.set_attachment_header(os.path.basename(self.path))


class SandboxNbconvertHandler(nbconvert_handlers.NbconvertFileHandler):
    """``/nbconvert/<format>/<path>``: every export is a download, never a script or a page."""

    @property
    def content_security_policy(self) -> str:
        return FILE_POLICY

    def get_argument(self, name: str, default: Any = None, strip: bool = True) -> Any:
        # The handler names the attachment after the export's extension when asked to.
        if name == "download":
            return "true"
        return super().get_argument(name, default, strip=strip)

    def finish(self, chunk: Any = None) -> Any:
        if self.get_status() < 400:
            self.set_header("Content-Type", DOWNLOAD_TYPE)
        self.set_header("X-Content-Type-Options", "nosniff")
        return super().finish(chunk)


class SandboxContentsManager(AsyncLargeFileManager):
    """The contents API over the root, following no symbolic link (sandbox_notebook.paths)."""

    # jupyter_server leaves the manager's methods unannotated: calls to them are marked as such.
    def _get_os_path(self, path: str) -> str:
        os_path: str = super()._get_os_path(path)  # type: ignore[no-untyped-call]
        root = os.path.abspath(self.root_dir)
        try:
            link = first_link(root, os.path.relpath(os_path, root))
        except NotServed as error:
            raise _not_found(path, error) from None
        if link is not None:
            raise web.HTTPError(
                404, f"{path} is not served: {link} is a symbolic link".replace("%", "%%")
            )
        return os_path

    @contextlib.contextmanager
    def open(self, os_path: str, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """Reads (the only use jupyter_server makes of it): opened without following links."""
        if args not in (("rb",), ()) or kwargs:
            raise ValueError(f"SandboxContentsManager.open reads only, not {args} {kwargs}")
        root = os.path.abspath(self.root_dir)
        with self.perm_to_403(os_path):
            try:
                descriptor = open_beneath(root, os.path.relpath(os_path, root))
            except NotServed as error:
                raise _not_found(os.path.relpath(os_path, root), error) from None
        with os.fdopen(descriptor, "rb") as opened:
            yield opened

    async def file_exists(self, path: str) -> bool:
        try:
            return await super().file_exists(path)
        except web.HTTPError:
            return False

    async def dir_exists(self, path: str) -> bool:
        try:
            return bool(await super().dir_exists(path))  # type: ignore[no-untyped-call]
        except web.HTTPError:
            return False

    def exists(self, path: str) -> bool:  # type: ignore[override]
        """A link counts as there (a new file does not take its name), though never served.

        Synchronous, as jupyter_server's is: its async manager calls it without awaiting."""
        try:
            # jupyter_server's own check that the path stays in the root, without the link rule
            os_path = AsyncLargeFileManager._get_os_path(self, path.strip("/"))
        except web.HTTPError:
            return False
        return os.path.lexists(os_path)

    async def _dir_model(self, path: str, content: bool = True) -> dict[str, Any]:
        """A directory's model; its listing leaves out links and anything not a file or a
        directory (jupyter_server's lists links and then reads through them)."""
        model: dict[str, Any] = await super()._dir_model(path, content=False)  # type: ignore[no-untyped-call]
        if not content:
            return model
        os_dir = self._get_os_path(path)
        entries = []
        for name in sorted(os.listdir(os_dir)):
            os_path = os.path.join(os_dir, name)
            try:
                mode = os.lstat(os_path)
            except OSError:
                continue  # gone since the listing
            if not (stat.S_ISREG(mode.st_mode) or stat.S_ISDIR(mode.st_mode)):
                continue
            if not self.should_list(name):  # type: ignore[no-untyped-call]
                continue
            if not self.allow_hidden and is_file_hidden(os_path, stat_res=mode):
                continue
            with contextlib.suppress(web.HTTPError, OSError):
                entries.append(await self.get(path=f"{path}/{name}".strip("/"), content=False))  # type: ignore[no-untyped-call]
        model["content"] = entries
        model["format"] = "json"
        return model


def apply(c: Any) -> None:
    """Route every root byte through the classes above (called from the notebook's config).

    jupyter_server builds its nbconvert route from that module's ``default_handlers`` when the
    web application starts, after the config ran, so the handler is replaced in that list.
    """
    c.ServerApp.contents_manager_class = SandboxContentsManager
    c.FileContentsManager.files_handler_class = SandboxFilesHandler
    routes = nbconvert_handlers.default_handlers
    for index, (pattern, handler) in enumerate(routes):
        if handler is nbconvert_handlers.NbconvertFileHandler:
            routes[index] = (pattern, SandboxNbconvertHandler)
    if SandboxNbconvertHandler not in {handler for _pattern, handler in routes}:
        raise RuntimeError("jupyter_server's nbconvert route was not found: exports unguarded")
