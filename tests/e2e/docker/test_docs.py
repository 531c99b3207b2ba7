"""Every ``python`` code block of the README and of ``docs/`` runs as a user would run it.

A user starts the stack, loads ``.env`` into the shell (the README says how), and pastes a
block into a file. Here each block is run as its own script, in an empty directory, against the
e2e stack, with the stack's tokens in the variables ``.env`` provides. The stack's ports differ
from the documented ones, so ``localhost:8889`` and ``localhost:8080`` in a block are pointed at
them; nothing else is changed. A block that is not a whole program is written as ``text``, not
``python``, so that no block the docs call Python escapes this test.

A ``print(...)  # shown`` line promises what it prints: the comment up to its first ": " (the
rest explains it) must appear in the block's output, in the order of the lines.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, Stack

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
PROMISE = re.compile(r"^\s*print\(.*\)\s+# (?P<shown>.+)$", re.MULTILINE)


def blocks() -> list[tuple[str, str]]:
    found = []
    for document in DOCUMENTS:
        for number, match in enumerate(BLOCK.finditer(document.read_text()), start=1):
            found.append((f"{document.relative_to(REPO)}#{number}", match.group(1)))
    return found


BLOCKS = blocks()


def test_the_docs_have_python_blocks() -> None:
    # A change of fence or layout that hid every block would make this module test nothing.
    names = {name.split("#")[0] for name, _ in BLOCKS}
    assert {"README.md", "docs/client.md"} <= names, names


@pytest.mark.parametrize(("name", "code"), BLOCKS, ids=[name for name, _ in BLOCKS])
def test_a_documented_block_runs_against_the_stack(
    stack: Stack, tmp_path: Path, name: str, code: str
) -> None:
    gateway = stack.gateway_http.removeprefix("http://")
    files = stack.file_server_url.removeprefix("http://")
    for documented in ("localhost:8889", "127.0.0.1:8889"):
        code = code.replace(documented, gateway)
    for documented in ("localhost:8080", "127.0.0.1:8080"):
        code = code.replace(documented, files)
    script = tmp_path / "block.py"
    script.write_text(code)
    env = {
        **os.environ,
        "JUPYTER_GATEWAY_AUTH_TOKEN": stack.gateway_token,
        "FILE_SERVER_TOKEN": stack.token,
    }
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, (
        f"{name} failed:\n{code}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    )
    position = 0
    for promise in PROMISE.finditer(code):
        shown = promise["shown"].split(": ")[0].strip()
        found = done.stdout.find(shown, position)
        assert found >= 0, f"{name}: {promise[0].strip()!r} did not print {shown!r}:\n{done.stdout}"
        position = found + len(shown)
