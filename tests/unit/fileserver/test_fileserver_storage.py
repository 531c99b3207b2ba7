"""AtomicWriter staging, commit and abort on a real directory (no server)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fileserver.errors import ConflictError
from fileserver.paths import confine, open_deepest_existing
from fileserver.storage import AtomicWriter

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


def test_commit_over_a_directory_is_a_conflict(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    writer = AtomicWriter(confine(tmp_path, "d"))
    writer.open()
    writer.write([b"x"])
    with pytest.raises(ConflictError):
        writer.commit()
    assert _tree(tmp_path) == ["d"]
