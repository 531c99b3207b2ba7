"""The notebook in headless Chromium: a cell runs in a kernel container, not in the notebook."""

from __future__ import annotations

import json
import os
import shutil
import uuid

import pytest
import requests

from .conftest import ARTIFACTS, Stack, docker

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("SANDBOX_CHROMIUM", "/usr/bin/chromium")


def _notebook(cell: str) -> dict[str, object]:
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "cells": [
            {
                "cell_type": "code",
                "id": "probe",
                "metadata": {},
                "execution_count": None,
                "outputs": [],
                "source": cell,
            }
        ],
    }


def test_notebook_cell_runs_in_a_kernel_container(stack: Stack) -> None:
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

    marker = uuid.uuid4().hex[:8]
    name = f"e2e-{marker}.ipynb"
    cell = f"import socket\nprint('host=' + socket.gethostname() + ' marker={marker}')"
    # No token locally, so the notebook server guards writes with its XSRF cookie instead.
    api = requests.Session()
    api.get(f"{stack.notebook_url}/tree", timeout=30)
    api.headers["X-XSRFToken"] = api.cookies.get("_xsrf", "")
    put = api.put(
        f"{stack.notebook_url}/api/contents/{name}",
        data=json.dumps({"type": "notebook", "format": "json", "content": _notebook(cell)}),
        timeout=30,
    )
    assert put.status_code in (200, 201), put.text
    notebook_host = docker("exec", stack.container("notebook"), "hostname").strip()

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{stack.notebook_url}/notebooks/{name}", wait_until="domcontentloaded")
            # The kernel indicator turns idle once the gateway has started the kernel container.
            page.locator(".jp-CodeCell .jp-InputArea-editor").first.click(timeout=60_000)
            page.wait_for_function(
                "() => document.querySelector('.jp-Notebook') !== null", timeout=60_000
            )
            output = page.locator(".jp-OutputArea-output", has_text=f"marker={marker}")
            for _attempt in range(4):
                page.keyboard.press("Shift+Enter")
                try:
                    output.wait_for(timeout=15_000)
                    break
                except sync_api.TimeoutError:
                    page.locator(".jp-CodeCell .jp-InputArea-editor").first.click()
            text = output.inner_text(timeout=5_000)
            page.screenshot(path=str(ARTIFACTS / "notebook-e2e.png"), full_page=True)
        finally:
            browser.close()

    kernel_host = text.split("host=", 1)[1].split()[0]
    kernel_hosts = {c["Config"]["Hostname"] for c in stack.kernel_containers()}
    assert kernel_host in kernel_hosts, (kernel_host, kernel_hosts)
    assert kernel_host != notebook_host
    api.delete(f"{stack.notebook_url}/api/contents/{name}", timeout=30)
