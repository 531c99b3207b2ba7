"""AtomicWriter staging, commit and abort on a real directory (no server)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fileserver.errors import ConflictError
from fileserver.paths import confine, confine_entry, open_deepest_existing
from fileserver.storage import AtomicWriter, delete

pytestmark = pytest.mark.unit


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_deepest_existing_directory(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    fd, missing = open_deepest_existing(tmp_path, ("a", "b", "c", "d"))
    try:
        assert os.path.samestat(os.fstat(fd), os.stat(tmp_path / "a" / "b"))
        assert missing == ("c", "d")
    finally:
        os.close(fd)


def test_commit_creates_parents_and_replaces(tmp_path: Path) -> None:
    target = confine(tmp_path, "x/y/file.bin")
    writer = AtomicWriter(target)
    writer.open()
    # Until commit, only the hidden staging file exists, in the deepest existing directory.
    assert [p.name.startswith(".fileserver-upload-") for p in tmp_path.iterdir()] == [True]
    writer.write([b"abc", memoryview(b"defg")])
    assert writer.commit() is True
    assert _tree(tmp_path) == ["x", "x/y", "x/y/file.bin"]
    assert (tmp_path / "x" / "y" / "file.bin").read_bytes() == b"abcdefg"

    again = AtomicWriter(target)
    again.open()
    again.write([b"new"])
    assert again.commit() is False
    assert (tmp_path / "x" / "y" / "file.bin").read_bytes() == b"new"
    assert _tree(tmp_path) == ["x", "x/y", "x/y/file.bin"]


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    writer = AtomicWriter(confine(tmp_path, "p/q/file.bin"))
    writer.open()
    writer.write([b"partial"])
    writer.abort()
    writer.abort()
    assert _tree(tmp_path) == []


def test_writing_over_a_directory_is_refused_before_any_byte(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(ConflictError, match="is a directory"):
        AtomicWriter(confine_entry(tmp_path, "d")).open()
    assert _tree(tmp_path) == ["d"]


def test_commit_over_a_directory_made_meanwhile_is_a_conflict(tmp_path: Path) -> None:
    writer = AtomicWriter(confine_entry(tmp_path, "d"))
    writer.open()
    writer.write([b"x"])
    (tmp_path / "d").mkdir()
    with pytest.raises(ConflictError):
        writer.commit()
    assert _tree(tmp_path) == ["d"]


def _links(root: Path) -> dict[str, str]:
    """One symlink of each kind beside a file and a directory; returns name -> link text."""
    (root / "file.txt").write_bytes(b"target")
    (root / "dir").mkdir()
    (root / "dir" / "inner.txt").write_bytes(b"inner")
    (root.parent / "outside.txt").write_bytes(b"outside")
    links = {
        "to_file": "file.txt",
        "to_dir": "dir",
        "dangling": "missing.txt",
        "to_outside": str(root.parent / "outside.txt"),
    }
    for name, text in links.items():
        (root / name).symlink_to(text)
    return links


def _state(root: Path) -> dict[str, object]:
    return {
        "tree": _tree(root),
        "links": {p.name: os.readlink(p) for p in root.iterdir() if p.is_symlink()},
        "file": (root / "file.txt").read_bytes(),
        "inner": (root / "dir" / "inner.txt").read_bytes(),
        "outside": (root.parent / "outside.txt").read_bytes(),
    }


@pytest.mark.parametrize("link", ["to_file", "to_dir", "dangling", "to_outside"])
def test_writer_refuses_a_symlink_destination_at_open(tmp_path: Path, link: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    _links(root)
    before = _state(root)
    with pytest.raises(ConflictError, match="symbolic link"):
        AtomicWriter(confine_entry(root, link)).open()
    assert _state(root) == before


def test_writer_refuses_a_symlink_planted_before_commit(tmp_path: Path) -> None:
    (tmp_path / "victim.txt").write_bytes(b"victim")
    writer = AtomicWriter(confine_entry(tmp_path, "new.txt"))
    writer.open()
    writer.write([b"payload"])
    (tmp_path / "new.txt").symlink_to("victim.txt")
    with pytest.raises(ConflictError, match="symbolic link"):
        writer.commit()
    assert (tmp_path / "victim.txt").read_bytes() == b"victim"
    assert os.readlink(tmp_path / "new.txt") == "victim.txt"
    assert _tree(tmp_path) == ["new.txt", "victim.txt"]


@pytest.mark.parametrize("link", ["to_file", "to_dir", "dangling", "to_outside"])
def test_delete_refuses_a_symlink(tmp_path: Path, link: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    _links(root)
    before = _state(root)
    with pytest.raises(ConflictError, match="symbolic link"):
        delete(confine_entry(root, link))
    assert _state(root) == before


def test_delete_follows_a_link_in_the_directory_part(tmp_path: Path) -> None:
    # POSIX unlink(2) semantics: only the final component is taken as named.
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f.txt").write_bytes(b"x")
    (tmp_path / "alias").symlink_to("real")
    delete(confine_entry(tmp_path, "alias/f.txt"))
    assert _tree(tmp_path) == ["alias", "real"]
