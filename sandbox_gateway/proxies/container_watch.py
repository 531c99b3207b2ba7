"""The state of every kernel container, kept from Docker's event stream.

Enterprise Gateway's restarter asks each kernel every 3 s whether it is alive, and its Docker
process proxy answered with a container listing and an inspect: two requests to the engine per
kernel, made on the gateway's event loop.  At 300 live idle kernels that was 200 requests a
second and about 30 % of a core, and every warm start and execute waited behind them.

``ContainerWatch`` lists this deployment's kernel containers once, then follows the engine's
event stream for them in a thread of its own, and answers ``state(kernel_id)`` from memory.  It
knows only what the stream told it: ``state`` is None for a kernel it has not seen (one still
launching), and for every kernel while the stream is down (the engine restarting), and the
caller then asks the engine itself, as before.  The stream is re-listed and followed again after
each reconnection, so an event missed while it was down cannot leave a stale state behind.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger("sandbox_docker")

# What each event makes of a container (``docker events`` actions); others change nothing.
STATES = {
    "create": "created",
    "start": "running",
    "unpause": "running",
    "restart": "running",
    "pause": "paused",
    "die": "exited",
    "stop": "exited",
    "oom": "exited",
}
RETRY_SECONDS = 1.0


class ContainerWatch:
    """Kernel container states by ``kernel_id`` label, for containers carrying ``labels``.

    ``api`` is a docker ``APIClient`` (``docker.DockerClient().api``).
    """

    def __init__(self, api: Any, labels: Iterable[str]) -> None:
        self.api = api
        self.labels = [*labels]
        self._states: dict[str, str] = {}
        self._lock = threading.Lock()
        self._following = False
        self._stream: Any = None
        self._stopped = threading.Event()

    def state(self, kernel_id: str) -> str | None:
        """The container's state ("created", "running", "paused", "exited"), or None when the
        watch cannot tell (it has not seen the container, or it is not following the stream)."""
        with self._lock:
            return self._states.get(kernel_id) if self._following else None

    def start(self) -> ContainerWatch:
        threading.Thread(
            target=self._follow_forever, name="kernel-container-watch", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        stream = self._stream
        if stream is not None:
            stream.close()

    def _follow_forever(self) -> None:
        while not self._stopped.is_set():
            try:
                self._follow()
            except Exception as exc:  # the engine restarting: poll it directly meanwhile
                if not self._stopped.is_set():
                    log.warning("kernel container events lost (%s); following them again", exc)
            with self._lock:
                self._following = False
            self._stopped.wait(RETRY_SECONDS)

    def _follow(self) -> None:
        filters = {"type": "container", "label": self.labels}
        # Subscribed before listing: an event between the two is applied after the listing.
        self._stream = self.api.events(since=int(time.time()) - 1, filters=filters, decode=True)
        listing = self.api.containers(all=True, filters={"label": self.labels})
        with self._lock:
            self._states = {
                kernel_id: str(found.get("State", ""))
                for found in listing
                if (kernel_id := (found.get("Labels") or {}).get("kernel_id"))
            }
            self._following = True
        for event in self._stream:
            self._apply(event)
        if not self._stopped.is_set():
            raise ConnectionError("the event stream ended")

    def _apply(self, event: dict[str, Any]) -> None:
        action = str(event.get("Action") or event.get("status") or "")
        kernel_id = ((event.get("Actor") or {}).get("Attributes") or {}).get("kernel_id")
        if not kernel_id:
            return
        with self._lock:
            if action == "destroy":
                self._states.pop(kernel_id, None)
            elif action in STATES:
                self._states[kernel_id] = STATES[action]


def watched_poll(
    watch: ContainerWatch | None, kernel_id: str, initial: set[str], ask: Callable[[], Any]
) -> Any:
    """A process proxy's ``poll()``: None (alive) while the container is in one of its
    ``initial`` states, else False; ``ask`` (the engine itself) when the watch cannot tell."""
    state = watch.state(kernel_id) if watch is not None else None
    if state is None:
        return ask()
    return None if state in initial else False
