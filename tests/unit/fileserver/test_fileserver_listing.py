"""Paged listings and their cursors on a real directory (no server)."""

from __future__ import annotations

import os
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path

import pytest

from fileserver.errors import BadRequestError, NotFoundError
from fileserver.listing import DirectoryPage, decode_cursor, encode_cursor
from fileserver.models import FileEntry, entry_json
from fileserver.paths import MAX_NAME_BYTES, TEMP_PREFIX, confine
from fileserver.storage import EntryInfo

pytestmark = pytest.mark.unit


def _read_all(root: Path, relative: str, limit: int) -> list[list[str]]:
    """Every page of a directory, as lists of names, following the cursors."""
    pages: list[list[str]] = []
    after: str | None = None
    while True:
        page = DirectoryPage.open(confine(root, relative), after=after, limit=limit)
        try:
            pages.append([entry.name for entry in page.describe(7)])
            while batch := page.describe(7):
                pages[-1].extend(entry.name for entry in batch)
        finally:
            page.close()
        if page.next_cursor is None:
            return pages
        after = decode_cursor(page.next_cursor)


@pytest.mark.parametrize("name", ["a", "file.txt", "名前.txt", "x" * MAX_NAME_BYTES, "a b=c&d"])
def test_cursor_round_trips(name: str) -> None:
    cursor = encode_cursor(name)
    assert decode_cursor(cursor) == name
    assert cursor.isascii() and "=" not in cursor


def test_cursor_round_trips_a_name_that_is_not_utf8() -> None:
    name = os.fsdecode(b"caf\xe9")
    assert decode_cursor(encode_cursor(name)) == name


@pytest.mark.parametrize(
    "cursor",
    [
        "!!",
        "a",  # one base64 digit encodes no whole byte
        "Zm9v=",  # padding is never emitted
        "Zm9v Zm9v",
        "Zm9",  # "fo" with stray low bits: not what the server issues
        encode_cursor("a/b"),
        encode_cursor("a\x00b"),
        "QUFB" * 100,  # longer than any name
        "%2e%2e",
        "Li4vZXRj/",
    ],
)
def test_garbled_or_forged_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(BadRequestError, match="invalid cursor"):
        decode_cursor(cursor)


def test_pages_cover_every_entry_once_in_name_order(tmp_path: Path) -> None:
    names = {f"f{i:04d}" for i in range(53)} | {"Zed", "ä", "日本", "0"}
    for name in names:
        (tmp_path / name).write_bytes(b"")
    pages = _read_all(tmp_path, "", limit=10)
    assert [len(page) for page in pages] == [10, 10, 10, 10, 10, 7]
    flat = [name for page in pages for name in page]
    assert flat == sorted(names)


@pytest.mark.parametrize("count", [0, 1, 9, 10, 11])
def test_last_page_has_no_cursor(tmp_path: Path, count: int) -> None:
    for i in range(count):
        (tmp_path / f"e{i:02d}").mkdir()
    pages = _read_all(tmp_path, "", limit=10)
    # A directory of exactly `limit` entries is one page, not a page and an empty one.
    assert len(pages) == max(1, -(-count // 10))
    assert [name for page in pages for name in page] == [f"e{i:02d}" for i in range(count)]


def test_a_page_reports_what_the_entries_are(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "file.bin").write_bytes(b"12345")
    (tmp_path / "d" / "sub").mkdir()
    (tmp_path / "d" / "link").symlink_to("file.bin")
    page = DirectoryPage.open(confine(tmp_path, "d"), after=None, limit=100)
    try:
        entries = {e.name: (e.path, e.size, e.is_dir) for e in page.describe(100)}
    finally:
        page.close()
    assert entries == {
        "file.bin": ("d/file.bin", 5, False),
        "link": ("d/link", 5, False),
        "sub": ("d/sub", 0, True),
    }


def test_unlistable_names_are_left_out(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "outside.txt").write_bytes(b"secret")
    (root / "kept.txt").write_bytes(b"")
    (root / f"{TEMP_PREFIX}0123").write_bytes(b"staging")
    (root / "escape").symlink_to(tmp_path / "outside.txt")
    (root / "dangling").symlink_to("missing")
    (root / "loop").symlink_to("loop")
    os.close(os.open(os.fsencode(root) + b"/caf\xe9", os.O_CREAT | os.O_WRONLY, 0o644))
    for limit in (1, 2, 100):
        pages = _read_all(root, "", limit)
        assert [name for page in pages for name in page] == ["kept.txt"]


def test_cursor_past_the_end_gives_an_empty_page(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"")
    page = DirectoryPage.open(confine(tmp_path, ""), after="zzz", limit=5)
    try:
        assert (page.describe(5), page.next_cursor) == ([], None)
    finally:
        page.close()


def test_listing_a_missing_directory_or_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(NotFoundError):
        DirectoryPage.open(confine(tmp_path, "missing"), after=None, limit=5)
    with pytest.raises(BadRequestError, match="not a directory"):
        DirectoryPage.open(confine(tmp_path, "f"), after=None, limit=5)


def test_close_releases_the_directory_once(tmp_path: Path) -> None:
    fds_before = len(os.listdir("/proc/self/fd"))
    page = DirectoryPage.open(confine(tmp_path, ""), after=None, limit=5)
    assert len(os.listdir("/proc/self/fd")) == fds_before + 1
    page.close()
    page.close()
    assert len(os.listdir("/proc/self/fd")) == fds_before


def test_choosing_a_page_takes_memory_of_the_page_not_of_the_directory(tmp_path: Path) -> None:
    # 2,000 names of 120 bytes: holding them all (listdir + sort) takes about 330 kB.
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(2_000):
            os.close(os.open(f"entry-{i:06d}-{'x' * 107}", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
    finally:
        os.close(fd)
    target = confine(tmp_path, "")
    tracemalloc.start()
    try:
        page = DirectoryPage.open(target, after="entry-001000", limit=50)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    try:
        assert [e.name[:12] for e in page.describe(3)] == [
            "entry-001000",
            "entry-001001",
            "entry-001002",
        ]
    finally:
        page.close()
    assert peak < 64 * 1024, f"choosing a page of 50 took {peak} bytes"


@pytest.mark.parametrize(
    "info",
    [
        EntryInfo("a.txt", "d/a.txt", 12, False, datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)),
        EntryInfo("名前", "名前", 0, True, datetime(2024, 5, 1, 10, 0, 0, 123456, timezone.utc)),
        EntryInfo('q"\\\n', 'q"\\\n', 2**40, False, datetime.fromtimestamp(0, timezone.utc)),
    ],
)
def test_entry_json_is_exactly_the_published_model(info: EntryInfo) -> None:
    # The listing encodes from the dataclass for speed; clients see the FileEntry schema.
    assert entry_json(info) == FileEntry.of(info).model_dump_json().encode()
