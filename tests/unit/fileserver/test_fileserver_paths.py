"""The confinement function and the no-follow directory walk, without a server."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from fileserver.errors import OutsideRootError, UnsafePathError
from fileserver.paths import (
    MAX_NAME_BYTES,
    ConfinedPath,
    confine,
    confine_entry,
    open_directory,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def root(tmp_path: Path) -> Path:
    base = tmp_path.resolve()
    shared = base / "shared"
    (shared / "a" / "b").mkdir(parents=True)
    (shared / "a" / "file.txt").write_text("x")
    (base / "outside").mkdir()
    (base / "outside" / "secret").write_text("s")
    (shared / "to_outside").symlink_to(base / "outside")
    (shared / "to_secret").symlink_to(base / "outside" / "secret")
    (shared / "to_a").symlink_to("a")
    (shared / "a" / "up").symlink_to("../../outside")
    return shared


@pytest.mark.parametrize(
    ("raw", "parts"),
    [
        ("", ()),
        ("a", ("a",)),
        ("a/", ("a",)),
        ("a/b/new.txt", ("a", "b", "new.txt")),
        ("not/yet/there", ("not", "yet", "there")),
        ("to_a/file.txt", ("a", "file.txt")),
        ("100% sure.txt", ("100% sure.txt",)),
        ("a%2e%2e", ("a%2e%2e",)),
        ("...", ("...",)),
        ("..hidden", ("..hidden",)),
        ("~$lock.docx", ("~$lock.docx",)),
        ("ünïcødé/名前.txt", ("ünïcødé", "名前.txt")),
        ("x" * MAX_NAME_BYTES, ("x" * MAX_NAME_BYTES,)),
    ],
)
def test_accepts_paths_inside_the_root(root: Path, raw: str, parts: tuple[str, ...]) -> None:
    confined = confine(root, raw)
    assert confined == ConfinedPath(root=root, parts=parts)
    assert confined.absolute == root.joinpath(*parts)


@pytest.mark.parametrize(
    "raw",
    [
        "..",
        "../outside/secret",
        "a/..",
        "a/../..",
        "a/../../outside/secret",
        "a/./b",
        ".",
        "./a",
        "/etc/passwd",
        "//etc/passwd",
        "a//b",
        "a\\..\\..\\outside",
        "..\\outside",
        "a\x00b",
        "secret\x00.png",
        "line\nbreak",
        "tab\there",
        "del\x7f",
        "%2e%2e/outside/secret",
        "%2E%2E%2Foutside",
        ".%2e/outside",
        "%252e%252e%252foutside",
        "%25252e%25252e/outside",
        "%2fetc%2fpasswd",
        "a%5c..%5c..",
        "a%00b",
        "%c0%ae%c0%ae/outside",
        "bad\ufffdutf8",
        "x" * (MAX_NAME_BYTES + 1),
        "é" * 128,
        "a/" * 2100 + "b",
        "%2525252525252e%2525252525252e",
    ],
)
def test_refuses_malformed_and_traversal_paths(root: Path, raw: str) -> None:
    with pytest.raises(UnsafePathError):
        confine(root, raw)


@pytest.mark.parametrize(
    "raw",
    ["to_outside", "to_outside/secret", "to_outside/new", "to_secret", "a/up", "a/up/secret"],
)
def test_refuses_symlinks_that_resolve_outside(root: Path, raw: str) -> None:
    with pytest.raises(OutsideRootError):
        confine(root, raw)


@pytest.mark.parametrize(
    ("raw", "parts"),
    [
        ("", ()),
        ("a/file.txt", ("a", "file.txt")),
        ("to_a", ("to_a",)),
        ("to_a/", ("to_a",)),
        ("to_outside", ("to_outside",)),
        ("to_secret", ("to_secret",)),
        ("a/up", ("a", "up")),
        ("to_a/file.txt", ("a", "file.txt")),
        ("to_a/new/x", ("a", "new", "x")),
    ],
)
def test_confine_entry_keeps_the_final_component_as_named(
    root: Path, raw: str, parts: tuple[str, ...]
) -> None:
    # Writes and deletes see the link itself; only the directory part is resolved.
    assert confine_entry(root, raw) == ConfinedPath(root=root, parts=parts)


@pytest.mark.parametrize("raw", ["to_outside/secret", "to_outside/new", "a/up/secret", "../x"])
def test_confine_entry_still_refuses_a_directory_part_outside(root: Path, raw: str) -> None:
    with pytest.raises((OutsideRootError, UnsafePathError)):
        confine_entry(root, raw)


@pytest.mark.parametrize("raw", ["..", "a/..", "a\\b", "a\x00b", "%2e%2e", "x" * 256, "a//b"])
def test_confine_entry_checks_the_text_as_confine_does(root: Path, raw: str) -> None:
    with pytest.raises(UnsafePathError):
        confine_entry(root, raw)


def test_refusal_touches_nothing(root: Path) -> None:
    before = sorted(str(p) for p in root.parent.rglob("*"))
    for raw in ["../outside/new", "to_outside/new/deeper", "a/../../x"]:
        with pytest.raises((UnsafePathError, OutsideRootError)):
            confine(root, raw)
    assert sorted(str(p) for p in root.parent.rglob("*")) == before


def test_root_has_no_name(root: Path) -> None:
    confined = confine(root, "")
    assert confined.is_root
    with pytest.raises(UnsafePathError):
        _ = confined.name


def test_open_directory_walks_and_creates(root: Path) -> None:
    fd = open_directory(root, ("new", "deep"), create=True)
    try:
        assert os.path.samestat(os.fstat(fd), os.stat(root / "new" / "deep"))
    finally:
        os.close(fd)


def test_open_directory_refuses_a_symlink_component(root: Path) -> None:
    # A link that confine() would have resolved, swapped in afterwards: the walk must not follow.
    with pytest.raises(OSError) as exc:
        open_directory(root, ("to_outside",))
    assert exc.value.errno in (errno.ELOOP, errno.ENOTDIR)
    with pytest.raises(OSError):
        open_directory(root, ("to_outside", "made"), create=True)
    assert not (root.parent / "outside" / "made").exists()


def test_open_directory_refuses_a_file_component(root: Path) -> None:
    with pytest.raises(NotADirectoryError):
        open_directory(root, ("a", "file.txt"))
