"""Requests sent at the same moment, for the races the gateway must win (limits, kernel ids)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def at_once(count: int, call: Callable[[int], T]) -> list[T]:
    """``call(0)`` … ``call(count - 1)``, each in a thread of its own, all released together;
    their results in the order they finished (an exception in one is raised here)."""
    barrier = threading.Barrier(count)
    results: list[T] = []
    errors: list[BaseException] = []

    def run(n: int) -> None:
        barrier.wait()
        try:
            results.append(call(n))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results
