"""The shared deadline watch: expired work is cancelled (its clean-up runs), work done in
time is untouched, and a cancellation from elsewhere is never taken for an expiry."""

from __future__ import annotations

import asyncio

import pytest

from ivrkit.deadline import DeadlineWatch, Expired


async def test_expired_work_is_cancelled_and_cleans_up_while_quick_work_is_not():
    watch = DeadlineWatch(0.2)
    never, cleaned = asyncio.Event(), asyncio.Event()

    async def stuck() -> str:
        try:
            await never.wait()
        finally:
            cleaned.set()  # what a store does: give back its lock and turn
        return "unreachable"

    async def quick(n: int) -> int:
        await asyncio.sleep(0)
        return n

    stuck_runs = [asyncio.create_task(watch.run(stuck())) for _ in range(3)]
    assert await asyncio.gather(*(watch.run(quick(n)) for n in range(5))) == list(range(5))
    for run in stuck_runs:
        with pytest.raises(Expired):
            await run
    assert cleaned.is_set()
    assert not watch._watched  # nothing left behind
    # The watch keeps working after expiries: later work gets its own full budget.
    assert await watch.run(quick(7)) == 7
    with pytest.raises(Expired):
        await watch.run(stuck())


async def test_a_cancellation_from_elsewhere_is_not_an_expiry():
    watch = DeadlineWatch(60)
    started = asyncio.Event()

    async def waits() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(watch.run(waits()))
    await started.wait()
    task.cancel()  # a client gone, a server shutting down
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not watch._watched


async def test_work_that_swallows_its_expiry_keeps_its_result_and_a_clean_task():
    watch = DeadlineWatch(0.01)

    async def stubborn() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "finished anyway"
        return "unreachable"

    async def caller() -> tuple[str, int]:
        result = await watch.run(stubborn())
        return result, asyncio.current_task().cancelling()  # type: ignore[union-attr]

    assert await caller() == ("finished anyway", 0)


async def test_other_errors_pass_through():
    watch = DeadlineWatch(5)

    async def broken() -> None:
        raise ValueError("flow bug")

    with pytest.raises(ValueError, match="flow bug"):
        await watch.run(broken())
    assert not watch._watched
