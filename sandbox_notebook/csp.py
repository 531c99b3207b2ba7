"""What the notebook's pages may run: kernel output renders as content, never as code.

A kernel's output is hostile (SPEC §5a) and is rendered inside the notebook page, so any script
in it would run with the page's authority: the ``_xsrf`` cookie and the same-origin API
(contents, kernels, sessions).  Outputs of a cell run in this session count as trusted, so
JupyterLab's sanitizer does not stand in the way; the Content-Security-Policy does.  It allows
scripts from the server's own files and, by hash, the few static inline scripts of its own
page templates - never inline scripts, event-handler attributes or ``javascript:`` URLs.  Every
other fetch stays on the server's origin, so output cannot send data out through the browser
either (a kernel has no network of its own).  "The server's own files" are its static assets:
kernels write into the notebook root (shared-data/), and no byte of the root is served as script,
style sheet or document (sandbox_notebook.files).

The policy has to allow ``'unsafe-eval'``: JupyterLab validates every plugin's settings with Ajv,
which compiles schemas with ``new Function``, and the UI does not start without it (measured:
every settings-backed plugin fails to activate).  Eval needs a script already running, so it
opens nothing by itself; what it would open are the renderers that turn output *data* into code:
application/javascript (``eval``ed) and Vega/Vega-Lite (expressions compiled with ``Function``,
with a history of sandbox escapes).  Those MIME types never reach the browser: the kernel
websocket drops them (sandbox_notebook.ws), and labconfig/page_config.json disables both
renderers where the front end honours it (JupyterLab at /lab; Notebook 7.3 does not for its
built-in renderers).
"""

from __future__ import annotations

import base64
import hashlib
import re
import sys
from collections.abc import Iterable
from pathlib import Path

_SCRIPT = re.compile(r"<script(?P<attrs>[^>]*)>(?P<body>.*?)</script>", re.DOTALL | re.IGNORECASE)
_TYPE = re.compile(r"""\btype\s*=\s*["']?(?P<type>[^"'\s>]+)""", re.IGNORECASE)
_JS_TYPES = {"", "text/javascript", "application/javascript", "module"}


def inline_script_hashes(template_files: Iterable[Path]) -> list[str]:
    """CSP hash sources of the static inline scripts in the server's own page templates.

    Notebook 7, JupyterLab and jupyter_server pages carry one inline script each (it removes a
    login token from the address bar); allowing exactly those keeps them working without
    ``'unsafe-inline'``.  A script with template syntax in it cannot be hashed in advance and is
    left out (blocked).
    """
    hashes: set[str] = set()
    for path in template_files:
        for match in _SCRIPT.finditer(path.read_text(encoding="utf-8", errors="replace")):
            attrs, body = match.group("attrs"), match.group("body")
            script_type = _TYPE.search(attrs)
            if "src=" in attrs.lower() or not body.strip() or "{{" in body or "{%" in body:
                continue
            if (script_type.group("type").lower() if script_type else "") not in _JS_TYPES:
                continue  # data blocks, such as the page config JSON, never execute
            digest = hashlib.sha256(body.encode("utf-8")).digest()
            hashes.add(f"'sha256-{base64.b64encode(digest).decode()}'")
    return sorted(hashes)


def server_templates() -> list[Path]:
    """The HTML templates the server renders pages from (jupyter_server, Notebook, JupyterLab)."""
    import jupyter_server
    import jupyterlab_server
    import notebook

    directories = [
        Path(jupyter_server.__file__).parent / "templates",
        Path(notebook.__file__).parent / "templates",
        Path(jupyterlab_server.__file__).parent / "templates",
        Path(sys.prefix) / "share" / "jupyter" / "lab" / "static",
    ]
    return sorted(p for d in directories if d.is_dir() for p in d.glob("*.html"))


def content_security_policy(script_hashes: Iterable[str], *, base_url: str = "/") -> str:
    """The Content-Security-Policy header of every response of the notebook server.

    - scripts: this origin's files and the hashed template scripts; no ``'unsafe-inline'``, so
      ``<script>`` in HTML/Markdown output, ``onerror=`` attributes and ``javascript:`` URLs
      never run.  (SVG output is shown through ``<img>``, where SVG scripts never run.)
      ``'unsafe-eval'`` for the UI's own schema validation (see the module docstring).
    - styles: inline styles stay allowed, the UI injects ``<style>`` elements; CSS cannot call
      the API.
    - images, fonts, media, workers: this origin plus ``data:``/``blob:``, which the UI uses
      for rendered images (PNG output is a data: URL); fetch/websocket and frames: this origin.
    - no plugins, no ``<base>`` (it would re-target relative URLs), forms post only here,
      framing only by this origin.  Violations are reported to jupyter_server's CSP endpoint,
      which logs them.
    """
    directives = {
        "default-src": ["'self'"],
        "script-src": ["'self'", *script_hashes, "'unsafe-eval'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:", "blob:"],
        "font-src": ["'self'", "data:"],
        "media-src": ["'self'", "data:", "blob:"],
        "connect-src": ["'self'"],
        "worker-src": ["'self'", "blob:"],
        "frame-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'self'"],
        "report-uri": [base_url.rstrip("/") + "/api/security/csp-report"],
    }
    return "; ".join(f"{name} {' '.join(values)}" for name, values in directives.items())
