"""The account-wide calls-per-second limit, kept in the database so every runner shares it.

Twilio queues (does not refuse) calls beyond the account's CPS, so going faster only
piles calls up in Twilio's queue with no control over when they ring; staying under the
limit keeps "at most N in progress" true. Each request takes the next slot from the
``ivrkit_call_rates`` row in one UPDATE, then waits for its start: slots are
``1/per_second`` apart whichever process or host takes them.
Hosts compare slot times against their own clocks: keep them in sync (NTP).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from ivrkit.outbound.campaign_store import CampaignStore


class SharedRate:
    """``await rate.turn()`` returns when this request may be sent, and its slot time."""

    def __init__(
        self,
        store: CampaignStore,
        *,
        account: str,
        per_second: float | None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if per_second is not None and per_second <= 0:
            raise ValueError("the call rate must be above 0 calls per second (or None: no limit)")
        self.store = store
        self.account = account
        self.interval = 0.0 if per_second is None else 1.0 / per_second
        self.clock = clock
        self.sleep = sleep
        # Slots handed out before a 429 lie before the pushed-back row: this runner's
        # own waiting requests honour the back-off through this (others' via the row).
        self._paused_until = 0.0

    async def turn(self) -> float:
        """Take the next slot and wait for it; with no limit, now."""
        now = self.clock()
        if not self.interval:
            await self.honour_back_off()
            return self.clock()
        slot = await self.store.take_slot(self.account, self.interval, now)
        delay = slot - self.clock()
        if delay > 0:
            await self.sleep(delay)
        await self.honour_back_off()
        return slot

    async def honour_back_off(self) -> None:
        """Return once no back-off of this runner is in force (checked again right before
        a request is sent: a 429 may have come while its attempt was being recorded)."""
        while (paused := self._paused_until - self.clock()) > 0:
            await self.sleep(paused)

    async def back_off(self, seconds: float) -> None:
        """Nobody sends before ``seconds`` from now (Twilio answered 429)."""
        until = self.clock() + seconds
        self._paused_until = max(self._paused_until, until)
        await self.store.push_back(self.account, until)
