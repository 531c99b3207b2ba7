"""Writes and deletes never act on a symlink's target: the one rule for PUT, POST and DELETE.

The rule: a write or delete whose final path component is a symlink is refused with 409,
whatever the link points to, and changes nothing. The directory part of a path may go through a
link that stays inside the root (as for POSIX ``rename``/``unlink``); reads follow in-root links.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.fileserver.fileserver_harness import FileServer, FsDirs, temp_leftovers

pytestmark = pytest.mark.integration

BOUNDARY = "----symlink-boundary"
LINKS = ["to_file", "to_dir", "dangling", "to_outside"]


def _multipart(filename: str, content: bytes) -> tuple[dict[str, str], bytes]:
    body = (
        (
            f"--{BOUNDARY}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n\r\n'
        ).encode()
        + content
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    return {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}, body


@pytest.fixture
def linked(
    file_server: FileServer, fs_dirs: FsDirs, workdir: tuple[str, Path]
) -> tuple[str, Path, Path]:
    """A workdir holding file.txt, dir/inner.txt and one link of each kind.

    Returns (relative name, absolute path, the file outside the root the last link designates).
    """
    name, path = workdir
    outside = fs_dirs.outside / f"{name}.txt"
    outside.write_bytes(b"outside")
    (path / "file.txt").write_bytes(b"target")
    (path / "dir").mkdir()
    (path / "dir" / "inner.txt").write_bytes(b"inner")
    (path / "to_file").symlink_to("file.txt")
    (path / "to_dir").symlink_to("dir")
    (path / "dangling").symlink_to("missing.txt")
    (path / "to_outside").symlink_to(outside)
    return name, path, outside


def _state(path: Path, outside: Path) -> dict[str, object]:
    return {
        "entries": sorted(p.name for p in path.iterdir()),
        "links": {p.name: os.readlink(p) for p in path.iterdir() if p.is_symlink()},
        "file": (path / "file.txt").read_bytes(),
        "dir": sorted(p.name for p in (path / "dir").iterdir()),
        "inner": (path / "dir" / "inner.txt").read_bytes(),
        "outside": outside.read_bytes(),
    }


@pytest.mark.parametrize("link", LINKS)
@pytest.mark.parametrize("trailing", ["", "/"], ids=["plain", "trailing-slash"])
def test_put_on_a_symlink_is_refused(
    file_server: FileServer, linked: tuple[str, Path, Path], link: str, trailing: str
) -> None:
    name, path, outside = linked
    before = _state(path, outside)
    response = file_server.request("PUT", f"/files/{name}/{link}{trailing}", body=b"PWNED")
    assert response.status == 409, response.body
    assert "symbolic link" in response.json()["detail"]  # type: ignore[index]
    assert _state(path, outside) == before
    assert temp_leftovers(path) == []


@pytest.mark.parametrize("link", LINKS)
def test_delete_on_a_symlink_is_refused(
    file_server: FileServer, linked: tuple[str, Path, Path], link: str
) -> None:
    name, path, outside = linked
    before = _state(path, outside)
    response = file_server.request("DELETE", f"/files/{name}/{link}")
    assert response.status == 409, response.body
    assert "symbolic link" in response.json()["detail"]  # type: ignore[index]
    assert _state(path, outside) == before


@pytest.mark.parametrize("link", LINKS)
def test_multipart_upload_named_like_a_symlink_is_refused(
    file_server: FileServer, linked: tuple[str, Path, Path], link: str
) -> None:
    name, path, outside = linked
    before = _state(path, outside)
    headers, body = _multipart(link, b"PWNED")
    response = file_server.request("POST", f"/files/{name}", headers=headers, body=body)
    assert response.status == 409, response.body
    assert "symbolic link" in response.json()["detail"]  # type: ignore[index]
    assert _state(path, outside) == before
    assert temp_leftovers(path) == []


def test_the_refusal_comes_before_the_body_is_read(
    file_server: FileServer, linked: tuple[str, Path, Path]
) -> None:
    name, path, _ = linked
    # 64 MiB offered, far past the 1 MiB limit: a server reading the body first would answer 413.
    chunks = (b"x" * 65536 for _ in range(1024))
    response, sent = file_server.send_chunked_until_answered(
        "PUT", f"/files/{name}/to_file", chunks
    )
    assert response.status == 409
    assert sent < 8 * 1024 * 1024
    assert (path / "file.txt").read_bytes() == b"target"


def test_links_in_the_directory_part_are_followed_inside_the_root(
    file_server: FileServer, linked: tuple[str, Path, Path]
) -> None:
    name, path, _ = linked
    put = file_server.request("PUT", f"/files/{name}/to_dir/new.txt", body=b"new")
    assert put.status == 201
    assert (path / "dir" / "new.txt").read_bytes() == b"new"
    assert file_server.request("DELETE", f"/files/{name}/to_dir/new.txt").status == 204
    assert not (path / "dir" / "new.txt").exists()
    # Reads follow a link to a file inside the root.
    assert file_server.request("GET", f"/files/{name}/to_file").body == b"target"


def test_the_entries_beside_the_links_stay_writable(
    file_server: FileServer, linked: tuple[str, Path, Path]
) -> None:
    # Guards against a server that refuses every write in a directory holding links.
    name, path, _ = linked
    assert file_server.request("PUT", f"/files/{name}/file.txt", body=b"v2").status == 200
    headers, body = _multipart("file.txt", b"v3")
    assert file_server.request("POST", f"/files/{name}", headers=headers, body=body).status == 200
    assert (path / "file.txt").read_bytes() == b"v3"
    assert file_server.request("DELETE", f"/files/{name}/file.txt").status == 204
    assert os.readlink(path / "to_file") == "file.txt"
