"""Per-call turns inside one process: a call's webhooks one at a time, in arrival order."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque


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

    def __contains__(self, call_sid: str) -> bool:
        return call_sid in self._busy
