"""File operations on the shared volume, performed by code running *in the kernel* (I/O-free).

Values reach the kernel as Python literals built by ``repr`` of plain strings (content is
base64 first), never by splicing text into code, so no content or path can inject code.  The
kernel-side code resolves every path below the shared root and refuses anything that escapes
it (``..``, absolute paths, symlinks pointing outside).
"""

from __future__ import annotations

import base64
import json
from typing import Final, Literal, TypedDict, get_args

from ._exceptions import FileOperationError
from ._result import ExecutionResult

FileOp = Literal["write", "read", "append", "delete", "list", "exists"]
FILE_OPS: Final[tuple[FileOp, ...]] = get_args(FileOp)


class FileEntry(TypedDict):
    """One entry of a ``list`` file operation."""

    name: str
    size: int
    is_dir: bool


FileOpValue = str | bytes | int | bool | list[FileEntry] | None
"""What ``execute_file_op`` returns: ``read`` → str (bytes with ``binary=True``); ``write`` and
``append`` → bytes written; ``list`` → entries; ``exists`` → bool; ``delete`` → None."""

_KERNEL_CODE: Final = """
def _sandbox_file_op(op, root, rel, payload):
    import base64, os, uuid
    root = os.path.realpath(root)
    target = os.path.realpath(os.path.join(root, rel))
    if target != root and not target.startswith(root + os.sep):
        raise PermissionError(f"{rel!r} resolves outside the shared directory")
    if op in ("write", "append"):
        data = base64.b64decode(payload)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if op == "append":
            with open(target, "ab") as f:
                f.write(data)
        else:
            temp = f"{target}.tmp-{uuid.uuid4().hex}"
            try:
                with open(temp, "wb") as f:
                    f.write(data)
                os.replace(temp, target)
            finally:
                if os.path.exists(temp):
                    os.remove(temp)
        return {"bytes": len(data)}
    if op == "read":
        with open(target, "rb") as f:
            return {"content": base64.b64encode(f.read()).decode("ascii")}
    if op == "delete":
        if os.path.isdir(target) and not os.path.islink(target):
            os.rmdir(target)
        else:
            os.remove(target)
        return {}
    if op == "list":
        entries = []
        for entry in sorted(os.scandir(target), key=lambda e: e.name):
            info = entry.stat(follow_symlinks=False)
            entries.append({"name": entry.name, "size": info.st_size,
                            "is_dir": entry.is_dir(follow_symlinks=False)})
        return {"entries": entries}
    return {"exists": os.path.lexists(target)}
"""


def confine(path: str) -> str:
    """``path`` normalised relative to the shared root; refuses anything that could escape."""
    if not isinstance(path, str):
        raise TypeError(f"path must be a string, not {type(path).__name__}")
    if "\x00" in path or "\\" in path:
        raise ValueError(f"path may not contain NUL or backslash: {path!r}")
    if path.startswith("/"):
        raise ValueError(f"path must be relative to the shared directory: {path!r}")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"path may not contain '..': {path!r}")
    return "/".join(parts)


def file_op_code(op: str, path: str, content: str | bytes | None, root: str) -> str:
    """The code that performs ``op`` in the kernel; validates everything first."""
    if op not in FILE_OPS:
        raise ValueError(f"unknown file operation {op!r}; expected one of {', '.join(FILE_OPS)}")
    rel = confine(path)
    if op in ("write", "append"):
        if content is None:
            raise ValueError(f"{op} needs content")
        if not isinstance(content, str | bytes):
            raise TypeError(f"content must be str or bytes, not {type(content).__name__}")
        if not rel:
            raise ValueError(f"{op} needs a file path, not the shared directory itself")
    elif content is not None:
        raise ValueError(f"{op} takes no content")
    if op in ("read", "delete") and not rel:
        raise ValueError(f"{op} needs a file path, not the shared directory itself")
    raw = content.encode("utf-8") if isinstance(content, str) else (content or b"")
    payload = base64.b64encode(raw).decode("ascii")
    call = f"_sandbox_file_op({op!r}, {root!r}, {rel!r}, {payload!r})"
    return (
        f"{_KERNEL_CODE}try:\n    print(__import__('json').dumps({call}))\n"
        "finally:\n    del _sandbox_file_op\n"
    )


def file_op_result(op: str, path: str, result: ExecutionResult, *, binary: bool) -> FileOpValue:
    """The operation's return value from the kernel's answer, or :class:`FileOperationError`."""
    if result.error is not None or not result.ok:
        error = result.error
        detail = f"{error.ename}: {error.evalue}" if error else result.status
        raise FileOperationError(
            f"{op} {path!r} failed in the kernel: {detail}", ename=error.ename if error else ""
        )
    if result.truncated:
        raise FileOperationError(
            f"{op} {path!r}: the kernel's answer exceeds max_output_bytes or the gateway's "
            "SANDBOX_MAX_MESSAGE_BYTES; "
            "use download_from_kernel for large files"
        )
    answer = json.loads(result.stdout)
    if op == "read":
        data = base64.b64decode(answer["content"])
        return data if binary else data.decode("utf-8")
    if op in ("write", "append"):
        return int(answer["bytes"])
    if op == "list":
        entries: list[FileEntry] = answer["entries"]
        return entries
    if op == "exists":
        return bool(answer["exists"])
    return None
