"""Stopping background tasks without hanging a shutdown.

On Python 3.11 a cancellation can be lost inside ``asyncio.wait_for`` when the awaited
future completes in the same loop iteration (nats-py's requests use it), so a task that was
cancelled once may carry on, and ``await task`` then waits forever. Services stop their
background tasks through :func:`cancel_and_wait`, which cancels again until the task ends
and gives up (with a warning) after a bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

RECANCEL_EVERY_S = 0.5


async def cancel_and_wait(
    tasks: asyncio.Task[Any] | Iterable[asyncio.Task[Any]] | None, *, timeout: float = 10.0
) -> bool:
    """Cancel ``tasks`` and wait until they end, cancelling again every half second.

    True when every task ended within ``timeout``; their results and errors are discarded
    (a task that failed has logged, or will be reported by the event loop, on its own).
    """
    if tasks is None:
        return True
    pending = {tasks} if isinstance(tasks, asyncio.Task) else set(tasks)
    deadline = time.monotonic() + timeout
    while pending:
        for task in pending:
            task.cancel()
        left = deadline - time.monotonic()
        if left <= 0:
            names = sorted(t.get_name() for t in pending)
            log.warning("%d task(s) did not stop: %s", len(pending), names)
            return False
        done, pending = await asyncio.wait(pending, timeout=min(RECANCEL_EVERY_S, left))
        for task in done:
            if not task.cancelled():
                task.exception()  # retrieved, so the loop does not report it again
    return True
