"""Polling a condition within a bound: the one wait the harness and the tests use instead
of fixed sleeps, so a test waits only as long as the thing it waits for takes."""

from __future__ import annotations

import time
from typing import Callable

INTERVAL = 0.05


def eventually(condition: Callable[[], object], timeout: float, interval: float = INTERVAL) -> bool:
    """Whether ``condition()`` is true at some point within ``timeout`` seconds, polled every
    ``interval`` and once more at the deadline. Exceptions from ``condition`` propagate."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())
