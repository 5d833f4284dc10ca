"""Waiting for what happens in other processes: spans arrive in batches, jobs finish later, files fill.

One helper for every test layer: poll a condition until it holds, and fail saying what did not happen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    condition: Callable[[], T],
    timeout: float,
    what: str,
    *,
    interval: float = 0.1,
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """Call `condition` until it returns something truthy, and return that.

    Past `timeout` seconds the test fails with `what` (what was awaited) and the last value or error.
    Exceptions of the `ignoring` types count as "not yet" (a service still starting refuses connections).
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = condition()
            if value:
                return value
            last = value
        except ignoring as error:
            last = error
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what} (last: {last!r})")
        time.sleep(interval)
