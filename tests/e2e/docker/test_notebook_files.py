"""Bytes a kernel writes into the shared volume never act with the notebook's authority.

Every kernel mounts the shared volume writable (/data/shared), and the notebook serves the same
volume inside its root (shared-data/), on its own origin.  The page's Content-Security-Policy
allows scripts from that origin, so a file a kernel writes there must never come back as
something the browser runs: here a cell writes script, a style sheet, HTML and a notebook that
nbconvert would turn into JavaScript, and loads them from HTML output, Markdown output and a
``srcdoc`` iframe.  None may run (checked on the server: no file written through
/api/contents, no terminal, no kernel), while a PNG from the same directory still renders.

A kernel can also create symbolic links there pointing anywhere in the notebook's container
(its environment, /etc/passwd, the notebook's home).  The notebook must not read or write
through them, on any route.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from jupyter_kernel_client import GatewayKernelSession

from .conftest import ARTIFACTS, Stack
from .test_notebook_browser import (
    SETTLE_SECONDS,
    NotebookAPI,
    _chromium,
    _notebook,
    _open,
    _payload,
    _png,
    _run_first_cell,
    _run_selected_cell,
)
from .test_notebook_browser import browser as browser  # the fixture, shared

pytestmark = pytest.mark.integration

# Script loaded from the shared volume, each way output can load it; the names the payloads
# leave behind (pwned-<kind>-<marker>.txt) say which one ran.
SCRIPT_KINDS = ("html", "module", "markdown", "srcdoc", "nbconvert", "frame")


def _javascript_notebook(source: str) -> dict[str, object]:
    """A notebook whose nbconvert "script" export is ``source`` served as text/javascript."""
    notebook = _notebook(source)
    notebook["metadata"] = {
        "language_info": {
            "name": "javascript",
            "mimetype": "text/javascript",
            "file_extension": ".js",
        }
    }
    return notebook


def _shared_scripts_cell(marker: str) -> str:
    """One cell, as a kernel would write it: files into /data/shared, then outputs loading them."""
    directory = f"files-{marker}"
    url = f"/files/shared-data/{directory}"
    files = {f"p-{kind}.js": _payload(kind, marker) for kind in SCRIPT_KINDS}
    files["p.css"] = "html { --pwned-css: 1; }"
    files["p-frame.html"] = f'<!doctype html><script src="{url}/p-frame.js"></script>'
    files["p-nb.ipynb"] = json.dumps(_javascript_notebook(_payload("nbconvert", marker)))
    outputs = [
        ("HTML", f'<script src="{url}/p-html.js"></script>'),
        ("HTML", f'<script type="module" src="{url}/p-module.js"></script>'),
        ("HTML", f'<link rel="stylesheet" href="{url}/p.css">'),
        ("Markdown", f'<script src="{url}/p-markdown.js"></script>'),
        ("HTML", f"<iframe srcdoc=\"<script src='{url}/p-srcdoc.js'></script>\"></iframe>"),
        ("HTML", f'<iframe src="{url}/p-frame.html"></iframe>'),
        ("HTML", f'<script src="/nbconvert/script/shared-data/{directory}/p-nb.ipynb"></script>'),
        # What a user does with a plot the kernel saved: a relative Markdown image.
        ("Markdown", f"![plot](shared-data/{directory}/ok.png)"),
    ]
    return "\n".join(
        [
            "import os",
            "from IPython.display import HTML, Markdown, display",
            f"os.makedirs('/data/shared/{directory}', exist_ok=True)",
            f"for name, text in {files!r}.items():",
            f"    with open('/data/shared/{directory}/' + name, 'w') as f:",
            "        f.write(text)",
            f"with open('/data/shared/{directory}/ok.png', 'wb') as f:",
            f"    f.write({_png()!r})",
            *(f"display({kind}({source!r}))" for kind, source in outputs),
            f"print('done-{marker}')",
        ]
    )


def test_shared_volume_scripts_never_run(stack: Stack, browser: Any) -> None:
    sync_api = _chromium()
    marker = uuid.uuid4().hex[:8]
    name = f"e2e-shared-scripts-{marker}.ipynb"
    api = NotebookAPI(stack.notebook_url)
    api.put_notebook(name, _notebook(f"print('ready-{marker}')", _shared_scripts_cell(marker)))
    kernels_before = api.kernel_ids()

    ARTIFACTS.mkdir(exist_ok=True)
    page = _open(browser, f"{stack.notebook_url}/notebooks/{name}")
    try:
        _run_first_cell(page, sync_api, f"ready-{marker}")
        _run_selected_cell(page, f"done-{marker}")
        # Until the browser has fetched the image and every script the page itself loads (it
        # either refused or ran each), then the time a payload's requests would take to land.
        page.wait_for_function(
            """marker => {
                const names = performance.getEntriesByType('resource').map(e => e.name);
                const wanted = ['ok.png', 'p-html.js', 'p-module.js', 'p-markdown.js', 'p.css',
                                'p-nb.ipynb'];
                return wanted.every(w => names.some(n => n.includes(marker) && n.endsWith(w)));
            }""",
            arg=f"files-{marker}",
            timeout=60_000,
        )
        time.sleep(SETTLE_SECONDS)
        page.screenshot(path=str(ARTIFACTS / "notebook-shared-scripts.png"), full_page=True)
        cell = page.locator(".jp-Cell").nth(1)
        rendered = cell.evaluate(
            """cell => ({
                text: cell.querySelector('.jp-OutputArea').innerText,
                pwned: Array.from(document.documentElement.attributes)
                    .map(a => a.name).filter(n => n.startsWith('data-pwned-')),
                css: getComputedStyle(document.documentElement)
                    .getPropertyValue('--pwned-css').trim(),
                pngWidths: Array.from(cell.querySelectorAll('.jp-RenderedMarkdown img'))
                    .map(i => i.naturalWidth),
                violations: window.__cspViolations,
            })"""
        )
    finally:
        page.close()

    leaked_files = [n for n in api.names() if n.startswith("pwned-") and marker in n]
    terminals = api.terminals()
    kernels_after = api.kernel_ids()
    sessions = [
        s
        for s in api.http.get(f"{stack.notebook_url}/api/sessions", timeout=30).json()
        if s.get("path") == name
    ]
    report = {"leaked_files": leaked_files, "terminals": terminals, **rendered}
    (ARTIFACTS / "notebook-shared-scripts.json").write_text(json.dumps(report, indent=2) + "\n")
    api.close(name)

    # Nothing the kernel wrote acted: no payload's request reached the server, no style applied.
    assert leaked_files == [], report
    assert terminals == [], report
    (session,) = sessions
    assert kernels_after - kernels_before == {session["kernel"]["id"]}, report
    assert rendered["pwned"] == [], report
    assert rendered["css"] == "", report
    # The user still sees the image the kernel saved beside them.
    assert f"done-{marker}" in rendered["text"], report
    assert rendered["pngWidths"] == [8], report


@pytest.fixture
def kernel(stack: Stack) -> Iterator[GatewayKernelSession]:
    session = GatewayKernelSession(stack.gateway_http, stack.gateway_ws, "python3")
    session.start()
    try:
        yield session
    finally:
        session.shutdown()


def _in_kernel(session: GatewayKernelSession, code: str) -> None:
    result = session.execute(code, timeout=60)
    assert result.error is None, result.error


def test_shared_volume_files_are_served_as_downloads_or_images(
    stack: Stack, kernel: GatewayKernelSession
) -> None:
    marker = uuid.uuid4().hex[:8]
    directory = f"types-{marker}"
    texts = {
        "x.js": "document.title = 'js';",
        "x.mjs": "export default 1;",
        "x.html": "<!doctype html><script>document.title = 'html'</script>",
        "x.svg": '<svg xmlns="http://www.w3.org/2000/svg"><script>1</script></svg>',
        "x.css": "@import url('x2.css');",
        "x.xml": "<?xml version='1.0'?><x/>",
        "x.txt": "plain text",
        # Bytes that sniff as HTML behind an image's name.
        "x.gif": "<html><script>document.title = 'gif'</script>",
    }
    notebook = json.dumps(_javascript_notebook("document.title = 'nbconvert';"))
    _in_kernel(
        kernel,
        "\n".join(
            [
                "import os",
                f"os.makedirs('/data/shared/{directory}', exist_ok=True)",
                f"for name, text in {texts!r}.items():",
                f"    open('/data/shared/{directory}/' + name, 'w').write(text)",
                f"open('/data/shared/{directory}/x.png', 'wb').write({_png()!r})",
                f"open('/data/shared/{directory}/x.ipynb', 'w').write({notebook!r})",
            ]
        ),
    )
    api = NotebookAPI(stack.notebook_url)
    base = f"{stack.notebook_url}/files/shared-data/{directory}"
    served: dict[str, dict[str, str]] = {}
    for file_name, text in texts.items():
        response = api.http.get(f"{base}/{file_name}", timeout=30)
        # The user can still download every shared file, byte for byte.
        assert response.status_code == 200 and response.text == text, (file_name, response)
        served[file_name] = dict(response.headers)
    png = api.http.get(f"{base}/x.png", timeout=30)
    script_export = api.http.get(
        f"{stack.notebook_url}/nbconvert/script/shared-data/{directory}/x.ipynb", timeout=30
    )
    html_export = api.http.get(
        f"{stack.notebook_url}/nbconvert/html/shared-data/{directory}/x.ipynb", timeout=30
    )
    report = {
        "files": served,
        "png": dict(png.headers),
        "nbconvert_script": dict(script_export.headers),
        "nbconvert_html": dict(html_export.headers),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "notebook-shared-types.json").write_text(json.dumps(report, indent=2) + "\n")

    for file_name, headers in served.items():
        content_type = headers.get("Content-Type", "")
        if file_name == "x.gif":
            assert content_type == "image/gif", report
        else:
            assert content_type == "application/octet-stream", (file_name, report)
            assert headers.get("Content-Disposition", "").startswith("attachment"), report
        assert headers.get("X-Content-Type-Options") == "nosniff", (file_name, report)
        policy = [d.strip() for d in headers.get("Content-Security-Policy", "").split(";")]
        assert "sandbox" in policy and "default-src 'none'" in policy, (file_name, report)
    assert png.status_code == 200 and png.headers["Content-Type"] == "image/png", report
    assert png.content == _png(), report
    for export in (script_export, html_export):
        assert export.status_code == 200, report
        assert export.headers["Content-Type"] == "application/octet-stream", report
        assert export.headers.get("Content-Disposition", "").startswith("attachment"), report
        assert export.headers.get("X-Content-Type-Options") == "nosniff", report


def test_shared_volume_symlinks_are_not_followed(
    stack: Stack, kernel: GatewayKernelSession
) -> None:
    marker = uuid.uuid4().hex[:8]
    directory = f"links-{marker}"
    api = NotebookAPI(stack.notebook_url)
    secret = f"secret-{marker}-content"
    secret_name = f"secret-{marker}.txt"
    body = {"type": "file", "format": "text", "content": secret}
    made = api.http.put(
        f"{stack.notebook_url}/api/contents/{secret_name}", data=json.dumps(body), timeout=30
    )
    assert made.status_code in (200, 201), made.text
    # Paths in the notebook's container: its environment (the gateway's address, any token),
    # its passwd, a file and a directory of its home (outside the shared volume but inside the
    # notebook root), a file not there yet (a write would create it), its config directory.
    links = {
        "environ": "/proc/self/environ",
        "passwd": "/etc/passwd",
        "secret.txt": f"/home/jovyan/{secret_name}",
        "home": "/home/jovyan",
        "written.txt": f"/home/jovyan/written-{marker}.txt",
        "config": "/home/jovyan/.jupyter",
    }
    _in_kernel(
        kernel,
        "\n".join(
            [
                "import os",
                f"os.makedirs('/data/shared/{directory}', exist_ok=True)",
                f"open('/data/shared/{directory}/regular.txt', 'w').write('regular-{marker}')",
                f"for name, target in {links!r}.items():",
                f"    os.symlink(target, '/data/shared/{directory}/' + name)",
            ]
        ),
    )
    contents = f"{stack.notebook_url}/api/contents/shared-data/{directory}"
    files = f"{stack.notebook_url}/files/shared-data/{directory}"
    nbconvert = f"{stack.notebook_url}/nbconvert/html/shared-data/{directory}"
    reads = {
        url: api.http.get(url, timeout=30)
        for name in ("environ", "passwd", "secret.txt", f"home/{secret_name}")
        for url in (f"{contents}/{name}", f"{files}/{name}", f"{nbconvert}/{name}")
    }
    reads[f"{contents}/home"] = api.http.get(f"{contents}/home", timeout=30)
    writes = {
        name: api.http.put(f"{contents}/{name}", data=json.dumps(body), timeout=30)
        for name in ("written.txt", f"home/new-{marker}.txt", "config/jupyter_server_config.py")
    }
    listing = api.http.get(contents, timeout=30)
    regular = api.http.get(f"{contents}/regular.txt", timeout=30)
    home_names = api.names()
    report = {
        "reads": {url: [r.status_code, r.text[:300]] for url, r in reads.items()},
        "writes": {name: [r.status_code, r.text[:300]] for name, r in writes.items()},
        "listing": [listing.status_code, listing.text[:2000]],
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "notebook-shared-links.json").write_text(json.dumps(report, indent=2) + "\n")
    api.http.delete(f"{stack.notebook_url}/api/contents/{secret_name}", timeout=30)

    # No target's content came back, through any route.
    for url, response in reads.items():
        assert response.status_code == 404, (url, report)
        # (A refusal names the path asked for, so a listing shows the secret file as an entry.)
        for leaked in ("JUPYTER_GATEWAY_URL", "jovyan:x:", secret, f'"name": "{secret_name}"'):
            assert leaked not in response.text, (url, leaked, report)
    # No write went through a link into the notebook's home.
    for name, response in writes.items():
        assert response.status_code == 404, (name, report)
    assert f"written-{marker}.txt" not in home_names, report
    assert f"new-{marker}.txt" not in home_names, report
    # The directory still lists and reads, links left out.
    assert listing.status_code == 200, report
    assert {item["name"] for item in listing.json()["content"]} == {"regular.txt"}, report
    assert regular.status_code == 200 and regular.json()["content"] == f"regular-{marker}"
