"""One watch for the deadline of every webhook in flight.

``asyncio.timeout`` arms and cancels a timer per use (about 9 us a webhook on the
benchmark machine, several per cent of a webhook's CPU). Every webhook has the same
budget, so the webhooks in flight expire in the order they started: a dict in insertion
order holds them, and one timer, set for the oldest, cancels whatever is due when it
fires and sets itself for the next. Registering a webhook is a dict insert, finishing it
a delete. Expiry cancels the webhook's task exactly as ``asyncio.timeout`` does, so the
store's clean-up on cancellation runs the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class Expired(Exception):
    """The work ran out of its budget and was cancelled."""


class _Watched:
    __slots__ = ("task", "expires", "expired", "cancelling")

    def __init__(self, task: asyncio.Task[object], expires: float) -> None:
        self.task = task
        self.expires = expires
        self.expired = False
        self.cancelling = task.cancelling()


class DeadlineWatch:
    """Runs awaitables under one shared budget of ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._watched: dict[_Watched, None] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self, work: Awaitable[T]) -> T:
        """``work``'s result, or :class:`Expired` once the budget is spent (the work is
        cancelled then). A cancellation from anywhere else goes through untouched."""
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - webhooks always run in a task
            return await work
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # an app served again on a new loop (tests, tools)
            self._watched.clear()
            self._loop, self._timer = loop, None
        watched = _Watched(task, loop.time() + self.seconds)
        self._watched[watched] = None
        if self._timer is None:
            self._timer = loop.call_at(watched.expires, self._expire, loop)
        try:
            result = await work
        except asyncio.CancelledError:
            if watched.expired and task.uncancel() <= watched.cancelling:
                raise Expired from None
            raise
        except BaseException:
            if watched.expired:
                task.uncancel()
            raise
        finally:
            self._watched.pop(watched, None)
        if watched.expired:
            # Expired as it finished: take back the cancel it did not see.
            task.uncancel()
        return result

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        due = []
        for watched in self._watched:
            if watched.expires > now:
                self._timer = loop.call_at(watched.expires, self._expire, loop)
                break
            due.append(watched)
        for watched in due:
            del self._watched[watched]
            watched.expired = True
            watched.task.cancel()
