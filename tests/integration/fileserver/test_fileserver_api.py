"""SPEC §4 endpoints against a real uvicorn server: success paths, auth, errors, limits."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.integration.fileserver.fileserver_harness import (
    FileServer,
    read_response,
    temp_leftovers,
)

pytestmark = pytest.mark.integration

BOUNDARY = "----fileserver-test-boundary"


def multipart(filename: str, content: bytes, field: str = "file") -> tuple[dict[str, str], bytes]:
    body = (
        (
            f"--{BOUNDARY}\r\n"
            f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    return {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}, body


# --- health and schema -------------------------------------------------------------------------


def test_health_needs_no_token(file_server: FileServer) -> None:
    response = file_server.request("GET", "/health", token=False)
    assert response.status == 200
    assert response.json() == {"status": "ok"}


def test_openapi_schema_lists_every_endpoint(file_server: FileServer) -> None:
    response = file_server.request("GET", "/openapi.json", token=False)
    assert response.status == 200
    paths = response.json()["paths"]  # type: ignore[index]
    assert set(paths["/files"]) == {"get", "post"}
    assert set(paths["/files/{path}"]) == {"get", "put", "post", "delete"}
    assert "/health" in paths


# --- listing -----------------------------------------------------------------------------------


def test_list_root_and_subdirectory(file_server: FileServer, workdir: tuple[str, Path]) -> None:
    name, path = workdir
    (path / "b.txt").write_bytes(b"12345")
    (path / "a-dir").mkdir()
    (path / "a-dir" / "inner.txt").write_bytes(b"x")

    root_listing = file_server.request("GET", "/files").json()
    assert isinstance(root_listing, list)
    mine = [e for e in root_listing if e["name"] == name]
    assert len(mine) == 1 and mine[0]["is_dir"] is True and mine[0]["path"] == name

    listing = file_server.request("GET", f"/files?path={name}").json()
    assert [e["name"] for e in listing] == ["a-dir", "b.txt"]  # type: ignore[union-attr]
    entry = listing[1]  # type: ignore[index]
    assert entry["path"] == f"{name}/b.txt"
    assert entry["size"] == 5
    assert entry["is_dir"] is False
    modified = datetime.fromisoformat(entry["modified"].replace("Z", "+00:00"))
    assert abs(modified.timestamp() - (path / "b.txt").stat().st_mtime) < 1

    nested = file_server.request("GET", f"/files?path={name}/a-dir").json()
    assert [(e["name"], e["path"]) for e in nested] == [("inner.txt", f"{name}/a-dir/inner.txt")]  # type: ignore[union-attr]


def test_list_missing_directory_is_404(file_server: FileServer) -> None:
    response = file_server.request("GET", "/files?path=no-such-dir")
    assert response.status == 404
    assert isinstance(response.json()["detail"], str)  # type: ignore[index]


def test_list_of_a_file_is_refused(file_server: FileServer, workdir: tuple[str, Path]) -> None:
    name, path = workdir
    (path / "f.txt").write_bytes(b"x")
    assert file_server.request("GET", f"/files?path={name}/f.txt").status == 400


# --- download ----------------------------------------------------------------------------------


def test_download_streams_exact_bytes(file_server: FileServer, workdir: tuple[str, Path]) -> None:
    name, path = workdir
    # Spans several of the server's 4 MiB I/O chunks, and is not a multiple of one.
    content = os.urandom(9 * 1024 * 1024 + 17)
    (path / "big.bin").write_bytes(content)
    response = file_server.request("GET", f"/files/{name}/big.bin")
    assert response.status == 200
    assert response.body == content
    assert response.headers["content-length"] == str(len(content))
    assert response.headers["content-type"] == "application/octet-stream"


def test_download_empty_file(file_server: FileServer, workdir: tuple[str, Path]) -> None:
    name, path = workdir
    (path / "empty").write_bytes(b"")
    response = file_server.request("GET", f"/files/{name}/empty")
    assert (response.status, response.body) == (200, b"")


def test_download_missing_is_404_json(file_server: FileServer) -> None:
    response = file_server.request("GET", "/files/does/not/exist.txt")
    assert response.status == 404
    assert response.headers["content-type"] == "application/json"
    assert set(response.json()) == {"detail"}  # type: ignore[arg-type]


def test_download_directory_is_refused(file_server: FileServer, workdir: tuple[str, Path]) -> None:
    name, _ = workdir
    assert file_server.request("GET", f"/files/{name}").status == 400


def test_download_fifo_does_not_hang(file_server: FileServer, workdir: tuple[str, Path]) -> None:
    name, path = workdir
    os.mkfifo(path / "pipe")
    response = file_server.request("GET", f"/files/{name}/pipe", timeout=5)
    assert response.status == 400


def test_download_through_symlink_inside_root(
    file_server: FileServer, workdir: tuple[str, Path]
) -> None:
    name, path = workdir
    (path / "real.txt").write_bytes(b"via link")
    (path / "link.txt").symlink_to("real.txt")
    assert file_server.request("GET", f"/files/{name}/link.txt").body == b"via link"


# --- PUT ---------------------------------------------------------------------------------------


def test_put_creates_then_replaces(file_server: FileServer, workdir: tuple[str, Path]) -> None:
    name, path = workdir
    first = file_server.request("PUT", f"/files/{name}/new/deep/f.txt", body=b"one")
    assert first.status == 201
    assert first.json() == {  # type: ignore[comparison-overlap]
        **first.json(),  # type: ignore[dict-item]
        "name": "f.txt",
        "path": f"{name}/new/deep/f.txt",
        "size": 3,
        "is_dir": False,
    }
    assert (path / "new" / "deep" / "f.txt").read_bytes() == b"one"

    second = file_server.request("PUT", f"/files/{name}/new/deep/f.txt", body=b"second")
    assert second.status == 200
    assert second.json()["size"] == 6  # type: ignore[index]
    assert (path / "new" / "deep" / "f.txt").read_bytes() == b"second"
    assert file_server.request("GET", f"/files/{name}/new/deep/f.txt").body == b"second"
    assert temp_leftovers(path) == []


def test_put_empty_body(file_server: FileServer, workdir: tuple[str, Path]) -> None:
    name, path = workdir
    assert file_server.request("PUT", f"/files/{name}/empty", body=b"").status == 201
    assert (path / "empty").read_bytes() == b""


def test_put_chunked_body(file_server: FileServer, workdir: tuple[str, Path]) -> None:
    name, path = workdir
    pieces = [os.urandom(50_000) for _ in range(6)]
    response, _ = file_server.send_chunked_until_answered("PUT", f"/files/{name}/c.bin", pieces)
    assert response.status == 201
    assert (path / "c.bin").read_bytes() == b"".join(pieces)


def test_put_over_a_directory_is_conflict(
    file_server: FileServer, workdir: tuple[str, Path]
) -> None:
    name, path = workdir
    (path / "d").mkdir()
    assert file_server.request("PUT", f"/files/{name}/d", body=b"x").status == 409
    assert (path / "d").is_dir()
    assert temp_leftovers(path) == []


def test_put_below_a_file_is_conflict(file_server: FileServer, workdir: tuple[str, Path]) -> None:
    name, path = workdir
    (path / "f").write_bytes(b"keep")
    assert file_server.request("PUT", f"/files/{name}/f/child", body=b"x").status == 409
    assert (path / "f").read_bytes() == b"keep"


def test_put_to_root_itself_is_refused(file_server: FileServer) -> None:
    assert file_server.request("PUT", "/files/", body=b"x").status == 400


# --- POST multipart ----------------------------------------------------------------------------


def test_post_multipart_into_directory(file_server: FileServer, workdir: tuple[str, Path]) -> None:
    name, path = workdir
    content = os.urandom(200_000)
    headers, body = multipart("data.bin", content)
    created = file_server.request("POST", f"/files/{name}/inbox", headers=headers, body=body)
    assert created.status == 201
    assert created.json()["path"] == f"{name}/inbox/data.bin"  # type: ignore[index]
    assert (path / "inbox" / "data.bin").read_bytes() == content

    headers, body = multipart("data.bin", b"replacement")
    replaced = file_server.request("POST", f"/files/{name}/inbox", headers=headers, body=body)
    assert replaced.status == 200
    assert (path / "inbox" / "data.bin").read_bytes() == b"replacement"
    assert temp_leftovers(path) == []


def test_post_multipart_into_root(file_server: FileServer) -> None:
    headers, body = multipart("root-upload.txt", b"at the root")
    response = file_server.request("POST", "/files", headers=headers, body=body)
    assert response.status in (200, 201)
    assert (file_server.root / "root-upload.txt").read_bytes() == b"at the root"
    (file_server.root / "root-upload.txt").unlink()


def test_post_ignores_other_fields(file_server: FileServer, workdir: tuple[str, Path]) -> None:
    name, path = workdir
    body = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="f.txt"\r\n\r\n'
        f"payload\r\n--{BOUNDARY}--\r\n"
    ).encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    assert file_server.request("POST", f"/files/{name}", headers=headers, body=body).status == 201
    assert sorted(p.name for p in path.iterdir()) == ["f.txt"]
    assert (path / "f.txt").read_bytes() == b"payload"


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({"Content-Type": "application/octet-stream"}, b"raw", 415),
        ({"Content-Type": "multipart/form-data"}, b"no boundary", 415),
        (multipart("x.txt", b"data", field="other")[0], multipart("x.txt", b"d", "other")[1], 400),
        (
            {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\n'
            "truncated".encode(),
            400,
        ),
        (
            {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"\r\n\r\nx\r\n'
            f"--{BOUNDARY}--\r\n".encode(),
            400,
        ),
    ],
    ids=["not-multipart", "no-boundary", "no-file-field", "truncated", "no-filename"],
)
def test_post_bad_multipart_leaves_nothing(
    file_server: FileServer,
    workdir: tuple[str, Path],
    headers: dict[str, str],
    body: bytes,
    status: int,
) -> None:
    name, path = workdir
    response = file_server.request("POST", f"/files/{name}", headers=headers, body=body)
    assert response.status == status
    assert "detail" in response.json()  # type: ignore[operator]
    assert list(path.iterdir()) == []


# --- DELETE ------------------------------------------------------------------------------------


def test_delete_file_then_404(file_server: FileServer, workdir: tuple[str, Path]) -> None:
    name, path = workdir
    (path / "gone.txt").write_bytes(b"x")
    assert file_server.request("DELETE", f"/files/{name}/gone.txt").status == 204
    assert not (path / "gone.txt").exists()
    assert file_server.request("GET", f"/files/{name}/gone.txt").status == 404
    assert file_server.request("DELETE", f"/files/{name}/gone.txt").status == 404


def test_delete_directories(file_server: FileServer, workdir: tuple[str, Path]) -> None:
    name, path = workdir
    (path / "full").mkdir()
    (path / "full" / "f").write_bytes(b"x")
    (path / "empty").mkdir()
    assert file_server.request("DELETE", f"/files/{name}/full").status == 409
    assert (path / "full" / "f").exists()
    assert file_server.request("DELETE", f"/files/{name}/empty").status == 204
    assert not (path / "empty").exists()


def test_delete_root_is_refused(file_server: FileServer) -> None:
    assert file_server.request("DELETE", "/files/").status == 400
    assert file_server.root.is_dir()


# --- authentication ----------------------------------------------------------------------------

ENDPOINTS = [
    ("GET", "/files", None),
    ("GET", "/files?path=x", None),
    ("GET", "/files/{name}/f.txt", None),
    ("PUT", "/files/{name}/f.txt", b"overwritten"),
    ("POST", "/files/{name}", "multipart"),
    ("POST", "/files", "multipart"),
    ("DELETE", "/files/{name}/f.txt", None),
]


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", "Bearer ", "Basic dXNlcjpwYXNz", "bearer", "Token {token}"],
    ids=["missing", "wrong", "empty", "basic", "no-credentials", "other-scheme"],
)
@pytest.mark.parametrize(("method", "target", "body"), ENDPOINTS)
def test_unauthenticated_requests_get_401_and_change_nothing(
    file_server: FileServer,
    workdir: tuple[str, Path],
    authorization: str | None,
    method: str,
    target: str,
    body: bytes | str | None,
) -> None:
    name, path = workdir
    (path / "f.txt").write_bytes(b"original")
    headers: dict[str, str] = {}
    if authorization is not None:
        headers["Authorization"] = authorization.format(token=file_server.token)
    payload: bytes | None = body if isinstance(body, bytes) else None
    if body == "multipart":
        extra, payload = multipart("f.txt", b"overwritten")
        headers.update(extra)
    before = sorted(p.name for p in file_server.root.iterdir())
    response = file_server.request(
        method, target.format(name=name), headers=headers, body=payload, token=False
    )
    assert response.status == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"detail": "missing or invalid bearer token"}
    assert (path / "f.txt").read_bytes() == b"original"
    assert sorted(p.name for p in path.iterdir()) == ["f.txt"]
    assert sorted(p.name for p in file_server.root.iterdir()) == before


def test_correct_token_is_accepted(file_server: FileServer) -> None:
    assert file_server.request("GET", "/files").status == 200


# --- upload limit (server limit: 1 MiB) --------------------------------------------------------

LIMIT = 1024 * 1024


def test_upload_of_exactly_the_limit_is_accepted(
    file_server: FileServer, workdir: tuple[str, Path]
) -> None:
    name, path = workdir
    assert file_server.request("PUT", f"/files/{name}/max", body=b"m" * LIMIT).status == 201
    assert (path / "max").stat().st_size == LIMIT


def test_declared_oversize_is_refused_before_the_body(
    file_server: FileServer, workdir: tuple[str, Path]
) -> None:
    name, path = workdir
    # Only the headers are sent: the 413 must come from Content-Length alone.
    with socket.create_connection(("127.0.0.1", file_server.port), timeout=10) as sock:
        sock.sendall(
            (
                f"PUT /files/{name}/big HTTP/1.1\r\nHost: localhost\r\n"
                f"Authorization: Bearer {file_server.token}\r\n"
                f"Content-Length: {LIMIT + 1}\r\nConnection: close\r\n\r\n"
            ).encode()
        )
        response = read_response(sock, "PUT")
    assert response.status == 413
    assert "detail" in response.json()  # type: ignore[operator]
    assert list(path.iterdir()) == []


def test_streamed_oversize_is_refused_and_leaves_nothing(
    file_server: FileServer, workdir: tuple[str, Path]
) -> None:
    name, path = workdir
    # 16 MiB offered without Content-Length, paced so that the client notices the early answer.
    chunks = (_pause(b"z" * 65536) for _ in range(256))
    response, sent = file_server.send_chunked_until_answered(
        "PUT", f"/files/{name}/new/parents/big", chunks
    )
    assert response.status == 413
    assert sent < 8 * LIMIT, "the server should refuse while the body is still arriving"
    assert list(path.iterdir()) == [], "no file, staging file or parent directory may remain"


def test_oversize_replacement_keeps_the_old_file(
    file_server: FileServer, workdir: tuple[str, Path]
) -> None:
    name, path = workdir
    (path / "keep").write_bytes(b"old content")
    chunks = (_pause(b"z" * 65536) for _ in range(256))
    response, _ = file_server.send_chunked_until_answered("PUT", f"/files/{name}/keep", chunks)
    assert response.status == 413
    assert (path / "keep").read_bytes() == b"old content"
    assert temp_leftovers(path) == []


def test_multipart_oversize_is_refused_and_leaves_nothing(
    file_server: FileServer, workdir: tuple[str, Path]
) -> None:
    name, path = workdir
    headers, body = multipart("big.bin", b"q" * (LIMIT + 1))
    # Chunked, so only the count of streamed bytes, not Content-Length, can catch it.
    pieces = (body[i : i + 65536] for i in range(0, len(body), 65536))
    response, _ = file_server.send_chunked_until_answered(
        "POST", f"/files/{name}/inbox", pieces, headers=headers
    )
    assert response.status == 413
    assert list(path.iterdir()) == [], "no file, staging file or 'inbox' directory may remain"


def test_client_disconnect_mid_upload_leaves_nothing(
    file_server: FileServer, workdir: tuple[str, Path]
) -> None:
    name, path = workdir
    with socket.create_connection(("127.0.0.1", file_server.port), timeout=10) as sock:
        sock.sendall(
            (
                f"PUT /files/{name}/sub/partial HTTP/1.1\r\nHost: localhost\r\n"
                f"Authorization: Bearer {file_server.token}\r\n"
                f"Content-Length: {LIMIT}\r\n\r\n"
            ).encode()
            + b"p" * (LIMIT // 2)
        )
        # Wait until the server has staged the upload, so the abort path is what is tested.
        deadline = time.monotonic() + 10
        while not temp_leftovers(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert temp_leftovers(path), "the server never started staging the upload"
    deadline = time.monotonic() + 10
    while list(path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert list(path.iterdir()) == []


# --- concurrency -------------------------------------------------------------------------------


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_writers_leave_exactly_one_writers_content(
    file_server: FileServer, workdir: tuple[str, Path], round_: int
) -> None:
    name, path = workdir
    writers = 8
    size = 256 * 1024
    contents = [bytes([65 + i]) * size for i in range(writers)]
    barrier = threading.Barrier(writers)
    statuses: list[int] = []
    errors: list[BaseException] = []

    def write(content: bytes) -> None:
        try:
            barrier.wait()
            # Small chunks with pauses keep the eight uploads interleaved on the server.
            chunks = (content[i : i + 16384] for i in range(0, size, 16384))
            paced = (_pause(c) for c in chunks)
            response, _ = file_server.send_chunked_until_answered(
                "PUT", f"/files/{name}/shared.bin", paced
            )
            statuses.append(response.status)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(c,)) for c in contents]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(statuses) == writers
    assert set(statuses) <= {200, 201}
    assert 201 in statuses
    final = (path / "shared.bin").read_bytes()
    assert final in contents, "the file mixes several writers' bytes"
    assert temp_leftovers(path) == []


def _pause(chunk: bytes) -> bytes:
    time.sleep(0.001)
    return chunk


# --- access log --------------------------------------------------------------------------------


def test_access_log_is_json_lines_without_the_token(
    file_server: FileServer, workdir: tuple[str, Path]
) -> None:
    name, _ = workdir
    file_server.request("PUT", f"/files/{name}/logged.txt", body=b"12345")
    file_server.request("GET", f"/files/{name}/logged.txt?token={file_server.token}")
    file_server.request("GET", "/files", token=False)
    time.sleep(0.2)
    text = file_server.log_text()
    assert file_server.token not in text
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    access = [r for r in records if r.get("event") == "access"]
    put = next(r for r in access if r["method"] == "PUT" and r["path"].endswith("/logged.txt"))
    assert put["status"] == 201
    assert put["bytes_in"] == 5
    assert put["bytes_out"] > 0
    assert isinstance(put["duration_ms"], float | int) and put["duration_ms"] >= 0
    get = next(r for r in access if r["method"] == "GET" and r["path"].endswith("/logged.txt"))
    assert get["bytes_out"] == 5
    assert any(r["status"] == 401 and r["path"] == "/files" for r in access)
