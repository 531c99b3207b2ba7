"""``python -m controller [kopf run options]``: ``kopf run --standalone -m controller.main``.

Without ``--namespace``/``-n`` or ``--all-namespaces``/``-A`` it watches all namespaces.
"""

from __future__ import annotations

import sys

from kopf.cli import main as kopf_cli


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    scoped = any(
        a in ("-A", "--all-namespaces", "-n", "--namespace") or a.startswith("--namespace=")
        for a in args
    )
    command = ["run", "--standalone", "-m", "controller.main", *args]
    if not scoped:
        command.append("--all-namespaces")
    kopf_cli(args=command, prog_name="python -m controller")


if __name__ == "__main__":
    main()
