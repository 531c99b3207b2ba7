"""Path confinement against a corpus of traversal payloads, on every endpoint.

Each payload is sent byte for byte as the request target (or the ``path`` query parameter, or
the multipart filename). Every answer must be a 4xx, and the sentinel file outside the root must
never be read (its content never appears in a response), written (content, size and mtime
unchanged, nothing new beside it) or deleted.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.fileserver.fileserver_harness import SENTINEL_CONTENT, FileServer, FsDirs

pytestmark = pytest.mark.integration

BOUNDARY = "----traversal-boundary"
PWNED = b"PWNED-by-traversal"

# Encodings of '..' and of '/', as they would appear in a request target.
DOTDOTS = [
    "..",
    "%2e%2e",
    "%2E%2E",
    ".%2e",
    "%2e.",
    "%252e%252e",
    "%25252e%25252e",
    "%c0%ae%c0%ae",
]
SEPARATORS = ["/", "%2f", "%2F", "%252f", "%5c", "%255c", "\\"]
# '..' at the start, in the middle, deep, at the end, alone, and repeated past the filesystem root.
TEMPLATES = [
    "{up}{sep}outside{sep}sentinel.txt",
    "a{sep}{up}{sep}{up}{sep}outside{sep}sentinel.txt",
    "a{sep}b{sep}c{sep}{up}{sep}{up}{sep}{up}{sep}{up}{sep}outside{sep}sentinel.txt",
    "outside{sep}{up}{sep}{up}{sep}outside{sep}sentinel.txt",
    "{up}{sep}{up}{sep}{up}{sep}{up}{sep}{up}{sep}{up}{sep}{up}{sep}{up}{sep}etc{sep}hostname",
    "a{sep}{up}",
    "{up}",
]


def traversal_payloads() -> list[str]:
    found = {
        template.format(up=up, sep=sep)
        for template, up, sep in itertools.product(TEMPLATES, DOTDOTS, SEPARATORS)
    }
    return sorted(found)


def absolute_payloads(sentinel: Path) -> list[str]:
    text = str(sentinel)
    return [
        text,  # appended to "/files/", this gives "/files//abs/path"
        "%2f" + text.lstrip("/"),
        "%2F" + text.lstrip("/").replace("/", "%2F"),
        "%252f" + text.lstrip("/"),
        "/" + text,
        "%5c" + text.lstrip("/").replace("/", "%5c"),
        "C:%5cWindows%5cwin.ini",
        "%2fetc%2fhostname",
    ]


NUL_PAYLOADS = [
    "sentinel.txt%00",
    "%00",
    "a%00b",
    "..%00/outside/sentinel.txt",
    "x%00/../../outside/sentinel.txt",
    "../outside/sentinel.txt%00.png",
    "%2500",
    "a%250a",
    "line%0abreak",
    "carriage%0dreturn",
]

OVERLONG_PAYLOADS = [
    "a" * 256,
    "%61" * 256,
    "%C3%A9" * 128,  # 256 bytes of UTF-8
    "d/" + "b" * 300 + "/f",
    "x/" * 2100 + "y",  # longer than PATH_MAX
]

# (link name inside the root, target); the payloads go through these links.
SYMLINKS = {
    "escape_dir": "{outside}",
    "escape_file": "{sentinel}",
    "escape_rel": "../outside",
    "escape_root": "/",
    "sub/escape_up": "../../outside",
    "escape_dangling": "{outside}/created-through-link.txt",
    "chain_a": "chain_b",
    "chain_b": "{outside}",
}

SYMLINK_PAYLOADS = [
    "escape_dir/sentinel.txt",
    "escape_dir",
    "escape_dir/new.txt",
    "escape_dir/deeper/new.txt",
    "escape_file",
    "escape_rel/sentinel.txt",
    "escape_rel",
    "escape_root{sentinel}",
    "escape_root/etc/hostname",
    "sub/escape_up/sentinel.txt",
    "sub/escape_up",
    "escape_dangling",
    "chain_a/sentinel.txt",
    "chain_a",
    "escape%5fdir/sentinel.txt",
    "escape_dir%2fsentinel.txt",
]


def build_corpus(dirs: FsDirs) -> list[str]:
    corpus = [
        *traversal_payloads(),
        *absolute_payloads(dirs.sentinel),
        *NUL_PAYLOADS,
        *OVERLONG_PAYLOADS,
        *(p.format(sentinel=dirs.sentinel) for p in SYMLINK_PAYLOADS),
    ]
    assert len(corpus) == len(set(corpus))
    return corpus


def _placeholder_dirs() -> FsDirs:
    # Collection happens before fixtures exist; payload ids only need the shape of the paths.
    base = Path("/BASE")
    return FsDirs(base, base / "shared", base / "outside", base / "outside" / "sentinel.txt")


CORPUS_SHAPES = build_corpus(_placeholder_dirs())


@pytest.fixture(scope="module")
def traversal_root(file_server: FileServer, fs_dirs: FsDirs) -> Iterator[Path]:
    for link, target in SYMLINKS.items():
        path = file_server.root / link
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target.format(outside=fs_dirs.outside, sentinel=fs_dirs.sentinel))
    (file_server.root / "a" / "b" / "c").mkdir(parents=True, exist_ok=True)
    (file_server.root / "inside.txt").write_bytes(b"inside")
    yield file_server.root
    for link in SYMLINKS:
        (file_server.root / link).unlink()


def _snapshot(directory: Path) -> dict[str, tuple[int, int, int]]:
    snap: dict[str, tuple[int, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(directory):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            st = full.lstat()
            snap[str(full.relative_to(directory))] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return snap


def _multipart(filename: str) -> tuple[dict[str, str], bytes]:
    body = (
        (
            f"--{BOUNDARY}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n\r\n'
        ).encode("utf-8", "surrogateescape")
        + PWNED
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    return {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}, body


def _assert_untouched(dirs: FsDirs, outside_before: dict[str, tuple[int, int, int]]) -> None:
    assert dirs.sentinel.read_bytes() == SENTINEL_CONTENT
    assert _snapshot(dirs.outside) == outside_before, "something outside the root changed"


def test_corpus_has_at_least_100_payloads() -> None:
    assert len(CORPUS_SHAPES) >= 100


@pytest.mark.parametrize("index", range(len(CORPUS_SHAPES)), ids=lambda i: f"p{i:03d}")
def test_payload_is_refused_on_every_endpoint(
    file_server: FileServer, fs_dirs: FsDirs, traversal_root: Path, index: int
) -> None:
    payload = build_corpus(fs_dirs)[index]
    outside_before = _snapshot(fs_dirs.outside)
    root_before = _snapshot(traversal_root)
    headers, body = _multipart("x.txt")
    attempts = [
        ("GET", f"/files?path={payload}", {}, None),
        ("GET", f"/files/{payload}", {}, None),
        ("PUT", f"/files/{payload}", {}, PWNED),
        ("POST", f"/files/{payload}", headers, body),
        ("DELETE", f"/files/{payload}", {}, None),
    ]
    for method, target, extra, content in attempts:
        response = file_server.request(method, target, headers=extra, body=content)
        assert 400 <= response.status < 500, f"{method} {target[:120]!r} -> {response.status}"
        assert SENTINEL_CONTENT not in response.body
        _assert_untouched(fs_dirs, outside_before)
    assert _snapshot(traversal_root) == root_before, "a refused request changed the root"


FILENAME_PAYLOADS = [
    "..",
    ".",
    "../sentinel.txt",
    "../outside/sentinel.txt",
    "../../outside/sentinel.txt",
    "sub/../../outside/sentinel.txt",
    "/abs/sentinel.txt",
    "{sentinel}",
    "..\\outside\\sentinel.txt",
    "a\\b",
    "%2e%2e%2foutside%2fsentinel.txt",
    "%252e%252e%252foutside%252fsentinel.txt",
    "escape_file",
    "escape_dangling",
    "x" * 256,
    "",
]


@pytest.mark.parametrize("filename", FILENAME_PAYLOADS)
def test_multipart_filename_is_confined(
    file_server: FileServer, fs_dirs: FsDirs, traversal_root: Path, filename: str
) -> None:
    outside_before = _snapshot(fs_dirs.outside)
    root_before = _snapshot(traversal_root)
    headers, body = _multipart(filename.format(sentinel=fs_dirs.sentinel))
    # The escape_* links live in the root, so only uploads into the root meet them.
    targets = ("/files",) if filename.startswith("escape_") else ("/files", "/files/a")
    for target in targets:
        response = file_server.request("POST", target, headers=headers, body=body)
        assert 400 <= response.status < 500, f"{filename!r} into {target} -> {response.status}"
        _assert_untouched(fs_dirs, outside_before)
    assert _snapshot(traversal_root) == root_before


def test_legitimate_paths_still_work_beside_the_links(
    file_server: FileServer, traversal_root: Path
) -> None:
    # Guards the corpus against a server that refuses everything.
    assert file_server.request("GET", "/files/inside.txt").body == b"inside"
    assert file_server.request("GET", "/files?path=a/b").status == 200
    names = {e["name"] for e in file_server.request("GET", "/files").json()}  # type: ignore[union-attr]
    assert "inside.txt" in names
    assert not names & {"escape_dir", "escape_file", "escape_root"}, "escaping links are listed"
