"""Taking turns: a call's webhooks one at a time, and batches that wait for the loop.

``CallTurns`` serialises the webhooks of one call inside a process, in arrival order.
``gather`` lets a batch writer wait a few turns of the event loop for more work.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable

GATHER_TURNS = 4
"""At most this many turns of the event loop gather work into one batch."""


async def gather(queued: Callable[[], int]) -> None:
    """Wait while turns of the loop bring more work, ``GATHER_TURNS`` at most.

    Under load the webhooks already running reach their save within a turn or two, so the
    batch holds nearly all of them; on a quiet server the first turn brings nothing and
    the batch goes at once.
    """
    count = queued()
    for _ in range(GATHER_TURNS):
        await asyncio.sleep(0)
        if queued() == count:
            return
        count = queued()


class CallTurns:
    """FIFO turns per CallSid; no lock object exists for a call nobody waits on."""

    def __init__(self) -> None:
        self._busy: dict[str, deque[asyncio.Future[None]]] = {}

    async def acquire(self, call_sid: str) -> None:
        """Wait for this call's earlier webhooks in this process."""
        waiters = self._busy.get(call_sid)
        if waiters is None:
            self._busy[call_sid] = deque()
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release(call_sid)  # handed the call while being cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    waiters.remove(turn)
            raise

    def release(self, call_sid: str) -> None:
        """Hand the call to its next waiting webhook, if any."""
        waiters = self._busy[call_sid]
        while waiters:
            turn = waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        del self._busy[call_sid]

    def waiting(self, call_sid: str) -> int:
        """How many webhooks of this call wait for their turn (tests and metrics read it)."""
        return len(self._busy.get(call_sid, ()))
