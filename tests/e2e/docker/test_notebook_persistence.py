"""Nothing a user saves is lost: the notebook root outlives its container and `docker-compose down`.

A notebook saved at the root (/home/jovyan) must survive ``up -d --force-recreate notebook``
(which is also what an image update does: a new container from the image) and ``down`` without
``-v``.  ``shared-data/`` keeps its own volume inside the root.
"""

from __future__ import annotations

import contextlib
import json
import uuid

import pytest
import requests

from .conftest import Stack

pytestmark = pytest.mark.integration


def _api(stack: Stack) -> requests.Session:
    """A session authorised like the notebook page (no token locally: the _xsrf cookie)."""
    api = requests.Session()
    api.get(f"{stack.notebook_url}/tree", timeout=30).raise_for_status()
    api.headers["X-XSRFToken"] = api.cookies.get("_xsrf", "")
    return api


def _save(stack: Stack, path: str, source: str) -> None:
    notebook = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [
            {
                "cell_type": "code",
                "id": "saved",
                "metadata": {},
                "execution_count": None,
                "outputs": [],
                "source": source,
            }
        ],
    }
    body = {"type": "notebook", "format": "json", "content": notebook}
    saved = _api(stack).put(
        f"{stack.notebook_url}/api/contents/{path}", data=json.dumps(body), timeout=30
    )
    assert saved.status_code in (200, 201), saved.text


def _source(stack: Stack, path: str) -> str | None:
    """The saved cell's source, or None when the notebook is gone."""
    got = requests.get(f"{stack.notebook_url}/api/contents/{path}", timeout=30)
    if got.status_code == 404:
        return None
    got.raise_for_status()
    return str(got.json()["content"]["cells"][0]["source"])


def _compose(stack: Stack, *args: str) -> None:
    done = stack.run_compose(*args)
    assert done.returncode == 0, f"compose {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"


@pytest.mark.timeout(900)
def test_a_saved_notebook_survives_recreation_and_down(stack: Stack) -> None:
    marker = uuid.uuid4().hex
    saved = {
        f"persist-{marker}.ipynb": f"print('root {marker}')",
        f"shared-data/persist-{marker}.ipynb": f"print('shared {marker}')",
    }
    for path, source in saved.items():
        _save(stack, path, source)
    container = stack.container("notebook")
    # shared-data/ is the shared volume, as before: the file server sees what was saved there.
    shared = requests.get(
        f"{stack.file_server_url}/files/persist-{marker}.ipynb",
        headers={"Authorization": f"Bearer {stack.token}"},
        timeout=30,
    )
    assert shared.status_code == 200 and marker in shared.text, shared.status_code

    try:
        # A new container from the image: what `--force-recreate` and an image update do.
        _compose(stack, "up", "-d", "--no-build", "--force-recreate", "notebook")
        stack.wait_healthy()
        assert stack.container("notebook") != container
        assert {path: _source(stack, path) for path in saved} == saved

        # `down` removes containers and networks, not named volumes.
        _compose(stack, "down")
        _compose(stack, "up", "-d", "--no-build")
        stack.wait_healthy()
        assert {path: _source(stack, path) for path in saved} == saved
    finally:
        with contextlib.suppress(requests.RequestException):
            api = _api(stack)
            for path in saved:
                api.delete(f"{stack.notebook_url}/api/contents/{path}", timeout=30)
