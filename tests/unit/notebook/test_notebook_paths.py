"""The notebook's file rules (``sandbox_notebook.paths``) on a real file
system: no symbolic link followed, regular files only, and which names are served inline.  The
server around them runs in tests/e2e/docker/test_notebook_files.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandbox_notebook import paths


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A notebook root with a shared directory holding what a kernel could leave there."""
    base = tmp_path / "root"
    shared = base / "shared-data" / "d"
    shared.mkdir(parents=True)
    (shared / "plain.txt").write_text("plain")
    (base / "secret.txt").write_text("secret")
    (tmp_path / "outside.txt").write_text("outside")
    (shared / "to-outside").symlink_to(tmp_path / "outside.txt")
    (shared / "to-secret").symlink_to(base / "secret.txt")
    (shared / "to-root").symlink_to(base)
    (shared / "dangling").symlink_to(base / "not-there.txt")
    os.mkfifo(shared / "fifo")
    return base


def _read(root: Path, relative: str) -> bytes:
    descriptor = paths.open_beneath(str(root), relative)
    try:
        return b"".join(paths.read_chunks(descriptor, None, None))
    finally:
        os.close(descriptor)


def test_a_regular_file_is_read(root: Path) -> None:
    assert _read(root, "shared-data/d/plain.txt") == b"plain"
    assert _read(root, "./shared-data/d/plain.txt") == b"plain"


@pytest.mark.parametrize(
    "relative", ["shared-data/d/to-outside", "shared-data/d/to-secret", "shared-data/d/dangling"]
)
def test_a_link_to_a_file_is_refused_wherever_it_points(root: Path, relative: str) -> None:
    with pytest.raises(paths.NotServed, match="symbolic link"):
        paths.open_beneath(str(root), relative)
    assert paths.first_link(str(root), relative) == relative


def test_a_link_to_a_directory_is_refused_on_the_way(root: Path) -> None:
    through = "shared-data/d/to-root/secret.txt"
    with pytest.raises(paths.NotServed, match="shared-data/d/to-root: a symbolic link"):
        paths.open_beneath(str(root), through)
    assert paths.first_link(str(root), through) == "shared-data/d/to-root"
    # Writing a new file below the link is refused the same way.
    assert paths.first_link(str(root), "shared-data/d/to-root/new.txt") == "shared-data/d/to-root"


def test_paths_without_links_pass(root: Path) -> None:
    assert paths.first_link(str(root), "shared-data/d/plain.txt") is None
    assert paths.first_link(str(root), "shared-data/d/new/deeper.txt") is None  # not there yet
    assert paths.first_link(str(root), "") is None


@pytest.mark.parametrize("relative", ["shared-data/d/fifo", "shared-data/d", ""])
def test_only_regular_files_are_read(root: Path, relative: str) -> None:
    # A FIFO would block the reading thread until a writer came: refused without waiting.
    with pytest.raises(paths.NotServed, match="not a regular file"):
        paths.open_beneath(str(root), relative)


@pytest.mark.parametrize("relative", ["../outside.txt", "shared-data/../../outside.txt", "/etc"])
def test_paths_leaving_the_root_are_refused(root: Path, relative: str) -> None:
    with pytest.raises(paths.NotServed, match="not a path inside"):
        paths.open_beneath(str(root), relative)
    with pytest.raises(paths.NotServed):
        paths.first_link(str(root), relative)


def test_a_missing_file_is_the_os_error(root: Path) -> None:
    with pytest.raises(FileNotFoundError):
        paths.open_beneath(str(root), "shared-data/d/missing.txt")


def test_chunks_cover_a_range(root: Path) -> None:
    (root / "big.bin").write_bytes(bytes(range(256)) * 1000)
    descriptor = paths.open_beneath(str(root), "big.bin")
    try:
        whole = b"".join(paths.read_chunks(descriptor, None, None, size=4096))
        part = b"".join(paths.read_chunks(descriptor, 10, 70_000, size=4096))
    finally:
        os.close(descriptor)
    assert whole == bytes(range(256)) * 1000
    assert part == whole[10:70_000]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("plot.png", "image/png"),
        ("photo.JPG", "image/jpeg"),
        ("a.gif", "image/gif"),
        ("a.webp", "image/webp"),
        ("p.js", None),
        ("p.mjs", None),
        ("p.css", None),
        ("p.html", None),
        ("p.svg", None),
        ("p.xml", None),
        ("notes.txt", None),
        ("png", None),
        ("x.png.js", None),
    ],
)
def test_only_raster_images_are_inline(name: str, expected: str | None) -> None:
    assert paths.inline_type(name) == expected
