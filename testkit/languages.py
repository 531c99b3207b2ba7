"""The kernel languages the sandbox ships, as the tests speak to them.

Each entry holds the few snippets a test needs in that language: state, output, an error, a
long run (for timeout and interrupt), a display, a file on the shared volume, and ``python``,
which runs a Python probe as a subprocess of the kernel. Every kernel image has a python3 (its
launcher's interpreter), so the isolation and containment probes written in Python run from
every language's kernel, as code that kernel starts, in its box.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    kernelspec: str
    language: str
    assign: str
    """Sets the session's ``x`` to 41."""
    read: str
    """Prints ``x + 1`` (so ``42``) and a newline."""
    streams: str
    """Writes ``out`` to stdout and ``err`` to stderr, each with a newline."""
    fails: str
    """Fails with ``error_text`` in the error's ename, evalue or traceback."""
    error_text: str
    sleeps: str
    """Runs for a minute unless interrupted."""
    display: str | None
    """Displays a PNG image (None: the language has no display)."""
    write: Callable[[str, str], str]
    """Code that writes ``text`` into the file ``path``."""
    python: Callable[[str], str]
    """Code that runs Python source with python3 and passes its stdout through."""
    merged_streams: bool = False
    """stdout and stderr arrive as one stream (a kernel that runs its language on a pty)."""
    uninterruptible: str | None = None
    """Code of a few seconds that the kernel does not stop when interrupted (None: none)."""
    wedged_by_interrupt: bool = False
    """Whether that interrupt leaves the kernel busy for good (Deno 2.9's does)."""


def _heredoc(source: str) -> str:
    return f"python3 - <<'SANDBOX_PROBE'\n{source}\nSANDBOX_PROBE"


# 1x1 PNG, written by the kernel and displayed through its own display mechanism.
PNG_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9a"
    "wAAAABJRU5ErkJggg=="
)

BASH = Language(
    kernelspec="bash",
    language="bash",
    assign="x=41",
    read="echo $((x + 1))",
    streams="echo out; echo err >&2",
    fails="ls /sandbox-no-such-path",
    error_text="2",
    sleeps="sleep 60",
    display=f"echo {PNG_BASE64} | base64 -d | display",
    write=lambda path, text: f"printf %s {shlex.quote(text)} > {shlex.quote(path)}",
    python=_heredoc,
    merged_streams=True,
)


def _deno_python(source: str) -> str:
    return (
        f"const probe = new Deno.Command('python3', {{ args: ['-c', {json.dumps(source)}] }})"
        ".outputSync();\n"
        "if (!probe.success) throw new Error(new TextDecoder().decode(probe.stderr));\n"
        "console.log(new TextDecoder().decode(probe.stdout).trimEnd());"
    )


JAVASCRIPT = Language(
    kernelspec="javascript",
    language="typescript",
    assign="var x: number = 41;",
    read="console.log(x + 1);",
    streams="console.log('out'); console.error('err');",
    fails="throw new TypeError('sandbox-failure');",
    error_text="sandbox-failure",
    # Deno's kernel interrupts running JavaScript, not an awaited promise (kernels/README.md).
    sleeps="const end = Date.now() + 60_000;\nwhile (Date.now() < end) {}",
    display=f"Deno.jupyter.display({{ 'image/png': '{PNG_BASE64}' }}, {{ raw: true }});",
    write=lambda path, text: f"Deno.writeTextFileSync({json.dumps(path)}, {json.dumps(text)});",
    python=lambda source: "{\n" + _deno_python(source) + "\n}",
    uninterruptible="await new Promise((resolve) => setTimeout(resolve, 8_000));",
    wedged_by_interrupt=True,
)


def _r_string(text: str) -> str:
    # JSON's escapes are R's too (json.dumps never writes \/); non-ASCII stays as UTF-8.
    return json.dumps(text, ensure_ascii=False)


def _r_python(source: str) -> str:
    command = f'system2("python3", c("-c", shQuote({_r_string(source)})), stdout = TRUE)'
    return f'cat({command}, sep = "\\n")'


R = Language(
    kernelspec="r",
    language="R",
    assign="x <- 41",
    read='cat(x + 1, "\\n", sep = "")',
    streams='cat("out\\n"); message("err", appendLF = FALSE)',
    fails='stop("sandbox-failure")',
    error_text="sandbox-failure",
    sleeps="Sys.sleep(60)",
    display="plot(c(1, 3, 2))",
    write=lambda path, text: f"cat({_r_string(text)}, file = {_r_string(path)})",
    python=_r_python,
)

LANGUAGES: dict[str, Language] = {
    language.kernelspec: language for language in (BASH, JAVASCRIPT, R)
}


def python_probe(kernelspec: str, source: str) -> str:
    """``source`` as code for ``kernelspec``'s kernel: itself for Python, else a subprocess."""
    if kernelspec in LANGUAGES:
        return LANGUAGES[kernelspec].python(source)
    return source
