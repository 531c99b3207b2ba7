"""Entry module for ``kopf run -m controller.main``: importing it registers the handlers."""

from __future__ import annotations

from . import handlers

__all__ = ["handlers"]
