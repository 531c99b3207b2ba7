"""The notebook in headless Chromium: cells run in kernel containers, and their output is content.

A kernel's output is hostile (SPEC §5a).  Here a cell emits script in every form a notebook
renders - Javascript(), HTML with <script>, an onerror attribute in HTML and in Markdown, SVG with
script - each trying what a page script with the notebook's authority could do: write a file
through /api/contents with the page's _xsrf cookie, open a terminal, start a kernel.  None of it
may happen (checked on the server), while the text, a table, a PNG and LaTeX still render.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import struct
import time
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from .conftest import ARTIFACTS, Stack, docker

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("SANDBOX_CHROMIUM", "/usr/bin/chromium")
# Ways kernel output can carry script; each payload names itself in what it would leave behind.
HOSTILE_KINDS = ("javascript", "html-script", "html-img", "html-svg", "markdown-img", "svg")
# Seconds after the outputs rendered that a payload would have had to act.
SETTLE_SECONDS = 5.0


def _notebook(*cells: str) -> dict[str, object]:
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "cells": [
            {
                "cell_type": "code",
                "id": f"cell{index}",
                "metadata": {},
                "execution_count": None,
                "outputs": [],
                "source": source,
            }
            for index, source in enumerate(cells)
        ],
    }


def _png(width: int = 8, height: int = 6) -> bytes:
    """A small valid RGB PNG (teal), without image libraries."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\x00\x80\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _payload(kind: str, marker: str) -> str:
    """Script that acts with the page's authority, written with single quotes only.

    It first marks the page (synchronously, so a run is seen even if its requests are slow),
    then writes a file with the _xsrf cookie, opens a terminal and starts a kernel.  "\\x5f" is
    "_": Markdown would otherwise read underscores as emphasis.
    """
    return (
        "(function(){"
        f"document.documentElement.setAttribute('data-pwned-{kind}','1');"
        "var m=document.cookie.match(/(?:^|; )\\x5fxsrf=([^;]*)/);"
        "var h={'X-XSRFToken':m?decodeURIComponent(m[1]):'','Content-Type':'application/json'};"
        f"fetch('/api/contents/pwned-{kind}-{marker}.txt',{{method:'PUT',headers:h,"
        f"body:JSON.stringify({{type:'file',format:'text',content:'{kind}'}})}});"
        "fetch('/api/terminals',{method:'POST',headers:h});"
        "fetch('/api/kernels',{method:'POST',headers:h,body:JSON.stringify({name:'python3'})});"
        "})()"
    )


def _hostile_cell(marker: str) -> str:
    """One cell: text, every hostile output, then the harmless ones that must still render."""
    js = {kind: _payload(kind, marker) for kind in HOSTILE_KINDS}
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20" '
        f'onload="{js["svg"]}"><script><![CDATA[{js["svg"]}]]></script>'
        '<rect width="40" height="20" fill="teal"/></svg>'
    )
    outputs = [
        ("Javascript", js["javascript"]),
        ("HTML", f"<script>{js['html-script']}</script>"),
        ("HTML", f'<img src=x onerror="{js["html-img"]}">'),
        ("HTML", f'<svg onload="{js["html-svg"]}"><rect/></svg>'),
        ("Markdown", f'<img src=x onerror="{js["markdown-img"]}">'),
        ("SVG", svg),
        ("HTML", f"<table><tr><th>probe</th></tr><tr><td>table-{marker}</td></tr></table>"),
    ]
    png = base64.b64encode(_png()).decode()
    vega = {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "data": {"values": [{"x": 1}]},
        "mark": "point",
        "encoding": {"x": {"field": "x", "type": "quantitative"}},
    }
    return "\n".join(
        [
            "import base64",
            "from IPython.display import HTML, SVG, Image, Javascript, Markdown, Math, display",
            f"print('text-{marker}')",
            *(f"display({kind}({source!r}))" for kind, source in outputs),
            # A Vega-Lite chart: its renderer compiles expressions into code, so only the
            # text/plain of the bundle may arrive.
            f"display({{'application/vnd.vegalite.v5+json': {vega!r}, "
            f"'text/plain': 'vega-{marker}'}}, raw=True)",
            f"display(Image(data=base64.b64decode({png!r}), format='png'))",
            r"display(Math(r'\int_0^1 x^2\,dx = \frac{1}{3}'))",
            f"print('done-{marker}')",
        ]
    )


def _chromium() -> Any:
    """The playwright module; skip (fail with SANDBOX_REQUIRE_DOCKER=1) without it or Chromium."""
    required = os.environ.get("SANDBOX_REQUIRE_DOCKER") == "1"
    try:
        from playwright import sync_api
    except ImportError:
        if required:
            pytest.fail(
                "SANDBOX_REQUIRE_DOCKER=1 but playwright is missing (pip install playwright)"
            )
        pytest.skip("playwright is not installed (pip install playwright)")
    if shutil.which(CHROMIUM) is None:
        if required:
            pytest.fail(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    return sync_api


class NotebookAPI:
    """The notebook server's REST API, authorised the way the page is (no token locally)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = requests.Session()
        self.http.get(f"{base}/tree", timeout=30)
        self.http.headers["X-XSRFToken"] = self.http.cookies.get("_xsrf", "")

    def put_notebook(self, name: str, notebook: dict[str, object]) -> None:
        body = {"type": "notebook", "format": "json", "content": notebook}
        done = self.http.put(f"{self.base}/api/contents/{name}", data=json.dumps(body), timeout=30)
        assert done.status_code in (200, 201), done.text

    def names(self) -> list[str]:
        listing = self.http.get(f"{self.base}/api/contents", timeout=30)
        listing.raise_for_status()
        return [item["name"] for item in listing.json()["content"]]

    def kernel_ids(self) -> set[str]:
        kernels = self.http.get(f"{self.base}/api/kernels", timeout=30)
        kernels.raise_for_status()
        return {k["id"] for k in kernels.json()}

    def terminals(self) -> list[Any]:
        """Open terminals; none when the server has no terminal API at all (404)."""
        listing = self.http.get(f"{self.base}/api/terminals", timeout=30)
        if listing.status_code == 404:
            return []
        listing.raise_for_status()
        return list(listing.json())

    def close(self, name: str) -> None:
        """Shut down the sessions (and so the kernels) of a notebook, then delete it."""
        for session in self.http.get(f"{self.base}/api/sessions", timeout=30).json():
            if session.get("path") == name:
                self.http.delete(f"{self.base}/api/sessions/{session['id']}", timeout=60)
        self.http.delete(f"{self.base}/api/contents/{name}", timeout=30)


@pytest.fixture
def browser() -> Iterator[Any]:
    sync_api = _chromium()
    with sync_api.sync_playwright() as pw:
        launched = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield launched
        finally:
            launched.close()


def _open(browser: Any, url: str) -> Any:
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    # Playwright's init scripts are not subject to the page's CSP: this only records what the
    # browser refused, for the artifact.
    page.add_init_script(
        "window.__cspViolations = [];"
        "document.addEventListener('securitypolicyviolation', e =>"
        " window.__cspViolations.push(e.violatedDirective + ' ' + (e.sample || e.blockedURI)));"
    )
    page.goto(url, wait_until="domcontentloaded")
    return page


def _run_first_cell(page: Any, sync_api: Any, text: str) -> Any:
    """Run the first cell until its output shows ``text`` (the kernel may still be starting).

    On failure the page is kept as test-artifacts/notebook-first-cell-failure.png.
    """
    editor = page.locator(".jp-CodeCell .jp-InputArea-editor").first
    output = page.locator(".jp-OutputArea-output", has_text=text)
    try:
        editor.click(timeout=60_000)
        for _attempt in range(5):
            page.keyboard.press("Shift+Enter")
            try:
                output.wait_for(timeout=15_000)
                return output
            except sync_api.TimeoutError:
                editor.click(timeout=15_000)
        output.wait_for(timeout=15_000)
        return output
    except sync_api.Error:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "notebook-first-cell-failure.png"), full_page=True)
        raise


def _run_selected_cell(page: Any, text: str) -> float:
    """Run the selected cell; seconds from the key press to its output showing ``text``."""
    output = page.locator(".jp-OutputArea-output", has_text=text)
    started = time.monotonic()
    page.keyboard.press("Shift+Enter")
    output.wait_for(timeout=60_000)
    return time.monotonic() - started


def test_notebook_cell_runs_in_a_kernel_container(stack: Stack, browser: Any) -> None:
    sync_api = _chromium()
    marker = uuid.uuid4().hex[:8]
    name = f"e2e-{marker}.ipynb"
    api = NotebookAPI(stack.notebook_url)
    cell = f"import socket\nprint('host=' + socket.gethostname() + ' marker={marker}')"
    api.put_notebook(name, _notebook(cell))
    notebook_host = docker("exec", stack.container("notebook"), "hostname").strip()

    ARTIFACTS.mkdir(exist_ok=True)
    page = _open(browser, f"{stack.notebook_url}/notebooks/{name}")
    try:
        text = _run_first_cell(page, sync_api, f"marker={marker}").inner_text(timeout=5_000)
        page.screenshot(path=str(ARTIFACTS / "notebook-e2e.png"), full_page=True)
        kernel_hosts = {c["Config"]["Hostname"] for c in stack.kernel_containers()}
    finally:
        page.close()
        api.close(name)

    kernel_host = text.split("host=", 1)[1].split()[0]
    assert kernel_host in kernel_hosts, (kernel_host, kernel_hosts)
    assert kernel_host != notebook_host


def test_kernel_output_renders_as_content_and_cannot_act(stack: Stack, browser: Any) -> None:
    sync_api = _chromium()
    marker = uuid.uuid4().hex[:8]
    name = f"e2e-hostile-{marker}.ipynb"
    api = NotebookAPI(stack.notebook_url)
    api.put_notebook(
        name,
        _notebook(f"print('ready-{marker}')", f"print('timing-{marker}')", _hostile_cell(marker)),
    )
    kernels_before = api.kernel_ids()

    ARTIFACTS.mkdir(exist_ok=True)
    page = _open(browser, f"{stack.notebook_url}/notebooks/{name}")
    try:
        _run_first_cell(page, sync_api, f"ready-{marker}")
        # Shift+Enter moved on to the next cell: a plain print on a warm kernel.
        round_trip = _run_selected_cell(page, f"timing-{marker}")
        hostile_round_trip = _run_selected_cell(page, f"done-{marker}")
        time.sleep(SETTLE_SECONDS)
        page.screenshot(path=str(ARTIFACTS / "notebook-hostile-output.png"), full_page=True)
        hostile = page.locator(".jp-Cell").nth(2)
        rendered = hostile.evaluate(
            """cell => ({
                text: cell.querySelector('.jp-OutputArea').innerText,
                pwned: Array.from(document.documentElement.attributes)
                    .map(a => a.name).filter(n => n.startsWith('data-pwned-')),
                brokenImages: cell.querySelectorAll('.jp-OutputArea-output img[onerror]').length,
                svgImages: Array.from(cell.querySelectorAll('.jp-RenderedSVG img'))
                    .filter(i => i.src.startsWith('data:image/svg+xml')).length,
                tableCells: Array.from(cell.querySelectorAll('.jp-RenderedHTMLCommon td'))
                    .map(td => td.textContent),
                pngWidths: Array.from(cell.querySelectorAll('.jp-RenderedImage img'))
                    .map(i => i.naturalWidth),
                latex: cell.querySelectorAll('.jp-RenderedLatex mjx-container').length,
                violations: window.__cspViolations,
            })"""
        )
    finally:
        page.close()

    kernels_after = api.kernel_ids()
    sessions = [
        s
        for s in api.http.get(f"{stack.notebook_url}/api/sessions", timeout=30).json()
        if s.get("path") == name
    ]
    leaked_files = [n for n in api.names() if n.startswith("pwned-") and marker in n]
    terminals = api.terminals()
    report = {
        "cell_run_to_output_seconds": round(round_trip, 3),
        "hostile_cell_run_to_output_seconds": round(hostile_round_trip, 3),
        "leaked_files": leaked_files,
        "terminals": terminals,
        "new_kernels": sorted(kernels_after - kernels_before),
        **rendered,
    }
    (ARTIFACTS / "notebook-hostile-output.json").write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"\nnotebook: cell run to output {round_trip:.3f}s (plain print, warm kernel), "
        f"{hostile_round_trip:.3f}s (the cell with every output kind)"
    )
    api.close(name)

    # Nothing acted: no script ran in the page, and the server saw none of its requests.
    assert rendered["pwned"] == [], rendered["pwned"]
    assert leaked_files == [], leaked_files
    assert terminals == [], terminals
    (session,) = sessions
    assert kernels_after - kernels_before == {session["kernel"]["id"]}, report
    # The hostile outputs are there, as content: the text around them, the <img> elements whose
    # onerror did not run, the SVG shown as an image.
    assert f"text-{marker}" in rendered["text"] and f"done-{marker}" in rendered["text"]
    assert "IPython.core.display.Javascript object" in rendered["text"], report
    assert f"vega-{marker}" in rendered["text"], report
    assert rendered["brokenImages"] >= 2, report
    assert rendered["svgImages"] == 1, report
    # Harmless outputs still render: a table, a PNG, LaTeX.
    assert f"table-{marker}" in rendered["tableCells"], report
    assert rendered["pngWidths"] == [8], report
    assert rendered["latex"] >= 1, report
