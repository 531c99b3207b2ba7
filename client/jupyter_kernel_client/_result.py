"""Typed results of an execution and the output events streamed while it runs."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from ._exceptions import ExecutionError

MimeBundle = dict[str, Any]
OutputKind = Literal["stdout", "stderr", "display", "result", "error"]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass(frozen=True)
class KernelErrorInfo:
    """An exception raised by the code inside the kernel."""

    ename: str
    evalue: str
    traceback: list[str]

    def plain_traceback(self) -> str:
        """The traceback without terminal colour codes."""
        return _ANSI.sub("", "\n".join(self.traceback))


@dataclass(frozen=True)
class OutputEvent:
    """One piece of output, in the order the kernel produced it.

    ``text`` is set for ``stdout``/``stderr``; ``data`` (a MIME bundle) for ``display`` and
    ``result``; ``error`` for ``error``.
    """

    kind: OutputKind
    text: str = ""
    data: MimeBundle = field(default_factory=dict)
    error: KernelErrorInfo | None = None

    def render(self) -> str:
        """The text a user would see for this output."""
        if self.kind in ("stdout", "stderr"):
            return self.text
        if self.error is not None:
            return self.error.plain_traceback() + "\n"
        plain = self.data.get("text/plain")
        return f"{plain}\n" if plain is not None else ""


@dataclass(frozen=True)
class ExecutionResult:
    """Everything one ``execute()`` produced."""

    status: str
    """``ok``, ``error`` or ``aborted`` (from the kernel's execute_reply)."""
    outputs: list[OutputEvent]
    """All outputs in arrival order."""
    execution_count: int | None
    duration: float
    """Seconds from sending the request to the kernel going idle."""
    truncated: bool = False
    """Whether output was dropped: past ``max_output_bytes`` (``outputs`` holds what came
    before; a streaming callback still saw everything), or by the gateway, which cuts a single
    message above its own limit (``SANDBOX_MAX_MESSAGE_BYTES``) before any client sees it."""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def stdout(self) -> str:
        return "".join(o.text for o in self.outputs if o.kind == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(o.text for o in self.outputs if o.kind == "stderr")

    @property
    def execute_result(self) -> MimeBundle | None:
        """The MIME bundle of the cell's value (``2 + 2`` → ``{"text/plain": "4"}``), if any."""
        for output in self.outputs:
            if output.kind == "result":
                return output.data
        return None

    @property
    def display_data(self) -> list[MimeBundle]:
        """MIME bundles of everything displayed (``display()``, plots, …)."""
        return [o.data for o in self.outputs if o.kind == "display"]

    @property
    def error(self) -> KernelErrorInfo | None:
        for output in self.outputs:
            if output.error is not None:
                return output.error
        return None

    @property
    def images(self) -> list[bytes]:
        """Decoded PNG images from displays and the result, in order."""
        return [
            base64.b64decode(o.data["image/png"])
            for o in self.outputs
            if o.kind in ("display", "result") and "image/png" in o.data
        ]

    def raise_for_error(self) -> ExecutionResult:
        """Raise :class:`ExecutionError` if the code failed; return ``self`` otherwise."""
        if not self.ok:
            raise ExecutionError(self)
        return self

    def __str__(self) -> str:
        text = "".join(o.render() for o in self.outputs).rstrip("\n")
        if self.truncated:
            text += (
                "\n[output truncated: more than max_output_bytes or the gateway's message limit; "
                "the rest was dropped]"
            )
        return text
