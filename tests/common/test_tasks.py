"""cancel_and_wait: a task that loses a cancellation still stops, and a stuck one is bounded."""

from __future__ import annotations

import asyncio
import time

from infraflow.common.tasks import cancel_and_wait


async def test_a_task_that_swallows_the_first_cancellation_still_stops() -> None:
    cancels = 0

    async def stubborn() -> None:
        nonlocal cancels
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancels += 1
                if cancels > 1:
                    raise
                # what a lost cancellation inside wait_for looks like to the caller

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    started = time.monotonic()
    assert await cancel_and_wait(task, timeout=5.0)
    assert task.cancelled()
    assert cancels == 2
    assert time.monotonic() - started < 2.0


async def test_a_task_that_never_stops_is_given_up_after_the_bound() -> None:
    release = asyncio.Event()

    async def immortal() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(immortal())
    await asyncio.sleep(0)
    started = time.monotonic()
    assert not await cancel_and_wait(task, timeout=0.3)
    assert 0.25 <= time.monotonic() - started < 2.0
    assert not task.done()
    release.set()
    task.cancel()
    await asyncio.wait({task}, timeout=1.0)
    assert task.done()


async def test_failed_and_finished_tasks_are_collected_quietly() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    async def sleeps() -> None:
        await asyncio.sleep(3600)

    failed = asyncio.create_task(fails())
    sleeping = asyncio.create_task(sleeps())
    await asyncio.sleep(0)
    assert await cancel_and_wait([failed, sleeping])
    assert failed.done()
    assert sleeping.cancelled()
    assert await cancel_and_wait(None)
