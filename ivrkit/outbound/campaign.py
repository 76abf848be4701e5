"""Campaigns: call every contact of a list into a flow, at a rate, within calling hours,
retrying what did not reach a person, and never calling anyone twice.

``Campaign`` is the runner. Any number of them (processes, hosts; PostgreSQL) may run the
same campaign: the state lives in the store (``campaign_store``), claims are taken under
the campaign's row lock, and the call rate is one shared row (``rate``). Stopping is
graceful: a stopped runner places nothing new, gives back what it claimed, and waits for
the calls it placed (a second stop leaves them to be adopted on resume).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from ivrkit.masking import mask_number
from ivrkit.outbound.calling_hours import CallingHours
from ivrkit.outbound.campaign_store import CampaignStore, Claimed
from ivrkit.outbound.contacts import Contact
from ivrkit.outbound.dialer import (
    AuthFailed,
    CallRequest,
    Dialer,
    DialError,
    DialOutcome,
    DialUnknown,
    InvalidNumber,
    RateLimited,
    Unreachable,
)
from ivrkit.outbound.progress import Progress
from ivrkit.outbound.rate import SharedRate

log = logging.getLogger("ivrkit.campaign")

PLACED_RETRIES = (0.2, 1.0, 3.0)
"""Pauses between tries to record a placed call's CallSid."""
RETRYABLE = frozenset({"busy", "no-answer", "failed", "machine"})
"""Outcomes retried by default: nobody was reached."""


@dataclass(frozen=True, slots=True)
class CampaignSettings:
    """How a campaign calls. Defaults suit a real Twilio account."""

    calls_per_second: float | None = 1.0
    """Account-wide, shared by every runner (Twilio's default CPS is 1); None: no limit."""
    max_in_progress: int = 10
    """Calls claimed, being requested or in progress at once, all runners together."""
    max_retries: int = 2
    """Calls after the first, for a contact whose outcome is in ``retry_on``."""
    retry_delay: float = 600.0
    retry_on: frozenset[str] = RETRYABLE
    calling_hours: CallingHours = field(default_factory=CallingHours)
    account: str = "default"
    """The Twilio account the rate belongs to (its SID)."""
    machine_detection: str | None = None
    """Twilio's MachineDetection for every call (``Enable`` or ``DetectMessageEnd``)."""
    result_key: str = "result"
    """The ``call.data`` key holding the flow's result; the final state when absent."""
    poll_interval: float = 1.0
    heartbeat: float = 5.0
    stale_after: float = 60.0
    """A runner silent this long (seconds) is taken for dead, its contacts taken over."""
    claim_batch: int = 20
    wait: bool = True
    """Wait for retries and calling hours; False: return once nothing is due now."""
    rate_limit_backoff: float = 5.0
    """Seconds nobody sends after Twilio answered 429."""

    def __post_init__(self) -> None:
        if self.max_in_progress < 1:
            raise ValueError("max_in_progress must be at least 1")
        if self.max_retries < 0:
            raise ValueError("max_retries cannot be negative")


@dataclass(frozen=True, slots=True)
class CampaignReport:
    """What a run left: contacts per outcome, and why it stopped if it did."""

    campaign_id: int
    counts: dict[str, int]
    stop_reason: str | None

    @property
    def finished(self) -> bool:
        return self.counts.get("done", 0) == sum(
            n for key, n in self.counts.items() if ":" not in key
        )


class CampaignStopped(Exception):
    """The campaign was stopped for every runner (e.g. Twilio refused the credentials)."""


def classify(outcome: DialOutcome) -> str:
    """One word per ended call: completed (a person), machine, busy, no-answer, failed..."""
    if outcome.status == "completed" and (outcome.answered_by or "").startswith(("machine", "fax")):
        return "machine"
    return outcome.status


class Campaign:
    """One runner of one campaign. ``await Campaign(...).run()``; ``stop()`` from a signal."""

    def __init__(
        self,
        store: CampaignStore,
        dialer: Dialer,
        *,
        name: str,
        flow: str,
        from_: str,
        settings: CampaignSettings | None = None,
        do_not_call: Iterable[str] = (),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        progress: Progress | None = None,
    ) -> None:
        self.store = store
        self.dialer = dialer
        self.name = name
        self.flow = flow
        self.from_ = from_
        self.settings = settings or CampaignSettings()
        self.do_not_call = frozenset(do_not_call)
        self.clock = clock
        self.progress = progress
        self.rate = SharedRate(
            store, account=self.settings.account, per_second=self.settings.calls_per_second
        )
        self.campaign_id: int | None = None
        self.runner: str | None = None
        self._stopping = False
        self._aborting = False
        self._wake = asyncio.Event()
        self._waiting: dict[asyncio.Task[None], Claimed] = {}  # before the request: cancellable
        self._tasks: set[asyncio.Task[None]] = set()
        # Between the attempt's record and the CallSid's: never cancelled, or a call
        # could exist that the store knows nothing of.
        self._requesting: set[asyncio.Task[None]] = set()
        self._stop_reason: str | None = None
        self._shown = 0.0

    async def load(self, contacts: Iterable[Contact]) -> bool:
        """Create the campaign with these contacts, or find it to resume; True if created."""
        self.campaign_id, created = await self.store.create_or_resume(
            self.name, flow=self.flow, from_number=self.from_, contacts=contacts, now=self.clock()
        )
        return created

    def stop(self) -> None:
        """Graceful: place nothing new; the calls in progress are waited for. A second
        call stops waiting for them too (they are adopted by the next run)."""
        if self._stopping:
            self._aborting = True
        self._stopping = True
        self._wake.set()

    async def run(self) -> CampaignReport:
        """Call until every contact is done, the campaign stops, or ``stop()``."""
        if self.campaign_id is None:
            raise RuntimeError("load() the campaign's contacts before run()")
        campaign_id = self.campaign_id
        self.runner = runner = await self.store.register_runner(campaign_id, self.clock())
        heart = asyncio.create_task(self._beat(), name="ivrkit-campaign-heartbeat")
        ending = "finished"
        try:
            await self._recover()
            last_recovery = time.monotonic()
            while not self._stopping:
                if time.monotonic() - last_recovery >= self.settings.heartbeat:
                    await self._recover()
                    last_recovery = time.monotonic()
                room = self.settings.max_in_progress - len(self._tasks)
                claimed = (
                    await self.store.claim(
                        campaign_id,
                        runner,
                        self.clock(),
                        max_in_progress=self.settings.max_in_progress,
                        limit=min(room, self.settings.claim_batch),
                    )
                    if room > 0
                    else []
                )
                if claimed is None:
                    info = await self.store.campaign(campaign_id)
                    self._stop_reason = (
                        info["stop_reason"] or "the campaign was stopped"
                        if info["state"] != "running"
                        else "this runner was taken over by another (heartbeat too late)"
                    )
                    break
                for contact in claimed:
                    self._spawn(contact)
                await self._show()
                if claimed:
                    continue
                if not self._tasks and await self._nothing_left(campaign_id):
                    break
                await self._pause()
            ending = await self._wind_down()
        except BaseException:
            ending = "stopped"
            raise
        finally:
            heart.cancel()
            await asyncio.gather(heart, return_exceptions=True)
            for task in self._tasks - self._requesting:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.store.end_runner(runner, ending, self.clock())
        counts = await self.store.counts(campaign_id)
        if self.progress is not None:
            self.progress.show(counts, final=True)
        return CampaignReport(campaign_id, counts, self._stop_reason)

    async def _nothing_left(self, campaign_id: int) -> bool:
        counts = await self.store.counts(campaign_id)
        if counts.get("done", 0) == sum(counts.get(s, 0) for s in _STATES):
            return True
        if self.settings.wait:
            return False
        # Not waiting: done once nothing is due now and no runner holds a contact.
        due = await self.store.next_due(campaign_id)
        now = _naive(self.clock())
        held = sum(counts.get(s, 0) for s in ("claimed", "requesting", "placed"))
        return held == 0 and (due is None or due > now)

    async def _pause(self) -> None:
        """Until a call of ours ends, the poll interval passes, or stop()."""
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval)
        except TimeoutError:
            pass

    async def _wind_down(self) -> str:
        """After the loop: give back the contacts not yet requested, then wait for the
        calls placed (unless aborted: those stay ``placed`` for the next run to adopt)."""
        for task in list(self._waiting):
            task.cancel()
        while self._tasks and not self._aborting:
            self._wake.clear()
            await self._show()
            try:
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval)
            except TimeoutError:
                pass
        return "stopped" if self._tasks or self._stopping else "finished"

    async def _show(self) -> None:
        # Counting is a scan of the campaign's contacts: a few times a second is plenty.
        if self.progress is None or self.campaign_id is None:
            return
        now = time.monotonic()
        if now - self._shown < 0.5:
            return
        self._shown = now
        self.progress.show(await self.store.counts(self.campaign_id))

    async def _beat(self) -> None:
        assert self.runner is not None
        while True:
            await asyncio.sleep(self.settings.heartbeat)
            try:
                alive = await self.store.heartbeat(self.runner, self.clock())
            except Exception:
                log.warning("campaign heartbeat failed; trying again", exc_info=True)
                continue
            if not alive:
                # Others took this runner for dead and took its contacts: every further
                # step would fail its runner check, so stop placing at once.
                log.error("campaign runner %s was taken for dead by another; stopping", self.runner)
                self._stop_reason = "this runner was taken over by another (heartbeat too late)"
                self.stop()
                self.stop()

    async def _recover(self) -> None:
        assert self.campaign_id is not None
        assert self.runner is not None
        adopted = await self.store.recover(
            self.campaign_id, self.runner, self.clock(), stale_after=self.settings.stale_after
        )
        for contact in adopted:
            log.info("adopted call %s of a stopped runner", contact.call_sid)
            self._spawn(contact, placed=True)

    def _spawn(self, contact: Claimed, *, placed: bool = False) -> None:
        task = asyncio.create_task(
            self._follow(contact) if placed else self._call(contact),
            name=f"ivrkit-campaign-contact-{contact.id}",
        )
        self._tasks.add(task)
        if not placed:
            self._waiting[task] = contact
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._waiting.pop(task, None)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("campaign contact task failed", exc_info=task.exception())

    async def _call(self, contact: Claimed) -> None:
        """claimed -> requesting -> placed, or back to pending, or done without a call."""
        runner = self.runner
        assert runner is not None
        task = asyncio.current_task()
        assert task is not None
        try:
            if contact.number in self.do_not_call:
                await self.store.finish(
                    contact, runner, outcome="do-not-call", detail=None, now=self.clock()
                )
                return
            now = self.clock()
            hours = self.settings.calling_hours
            if not hours.allows(now, contact.time_zone):
                opening = hours.next_opening(now, contact.time_zone)
                await self.store.release(contact, runner, opening, now)
                return
            slot = await self.rate.turn()
            if self._stopping:
                raise asyncio.CancelledError
        except asyncio.CancelledError:
            await self.store.release(contact, runner, self.clock(), self.clock())
            raise
        # From here on the task is not cancelled by a stop: the request and its record
        # must both happen, or the contact would be left in doubt.
        self._waiting.pop(task, None)
        self._requesting.add(task)
        try:
            call_sid = await self._request(contact, slot)
        finally:
            self._requesting.discard(task)
        if call_sid is not None and not self._aborting:
            # (Aborted: the call stays placed, for the next run to adopt.)
            await self._follow(_with_sid(contact, call_sid))

    async def _request(self, contact: Claimed, slot: float) -> str | None:
        """requesting -> placed (the CallSid recorded), or the request's error handled."""
        runner = self.runner
        assert runner is not None
        attempt = await self.store.start_request(
            contact, runner, slot_at=slot, requested_at=time.time(), now=self.clock()
        )
        if attempt is None:
            log.warning("contact %s was taken over; not calling", contact.id)
            return None
        request = CallRequest(
            flow=self.flow,
            to=contact.number,
            from_=self.from_,
            data=contact.data,
            machine_detection=self.settings.machine_detection,
        )
        await self.rate.honour_back_off()
        try:
            call_sid = await self.dialer.place(request)
        except DialError as error:
            await self._refused(contact, attempt, error)
            return None
        except DialUnknown as error:
            await self._in_doubt(contact, attempt, error)
            return None
        placed_at = time.time()
        for pause in (*PLACED_RETRIES, None):
            # The call exists: its CallSid is worth a few tries. If they all fail the
            # contact stays "requesting" and ends "unknown", never called again.
            try:
                await self.store.placed(contact, attempt, runner, call_sid, placed_at, self.clock())
                break
            except Exception:
                if pause is None:
                    raise
                log.warning("recording call %s failed; trying again", call_sid, exc_info=True)
                await asyncio.sleep(pause)
        return call_sid

    async def _in_doubt(self, contact: Claimed, attempt: int, error: DialUnknown) -> None:
        # The request may have created a call: never call again (see campaign_store).
        assert self.runner is not None
        log.error("call to %s in doubt: %s", mask_number(contact.number), error)
        await self.store.not_placed(
            contact,
            attempt,
            self.runner,
            error=f"no answer from the Calls API ({error}): the call may exist; not placed again",
            counts=True,
            state="done",
            due=self.clock(),
            outcome="unknown",
            now=self.clock(),
        )

    async def _refused(self, contact: Claimed, attempt: int, error: DialError) -> None:
        runner = self.runner
        assert runner is not None
        now = self.clock()
        reason = f"{type(error).__name__}: {error}"
        if isinstance(error, AuthFailed | Unreachable):
            # Nothing can be placed until the operator acts: stop every runner, and give
            # the contact back untouched (no call was created).
            self._stop_reason = f"{error}; fix it and run the campaign again to resume"
            await self.store.not_placed(
                contact,
                attempt,
                runner,
                error=reason,
                counts=False,
                state="pending",
                due=now,
                outcome=None,
                now=now,
            )
            await self.store.stop_campaign(self.campaign_id or 0, self._stop_reason, now)
            log.error("campaign %s stopped: %s", self.name, self._stop_reason)
            self.stop()
            return
        if isinstance(error, RateLimited):
            await self.rate.back_off(self.settings.rate_limit_backoff)
            await self.store.not_placed(
                contact,
                attempt,
                runner,
                error=reason,
                counts=False,
                state="pending",
                due=now,
                outcome=None,
                now=now,
            )
            return
        if isinstance(error, InvalidNumber):
            log.warning("%s cannot be called: %s", mask_number(contact.number), error)
            await self.store.not_placed(
                contact,
                attempt,
                runner,
                error=reason,
                counts=True,
                state="done",
                due=now,
                outcome="failed",
                now=now,
            )
            return
        # Another answered error: a failed attempt, retried like a failed call.
        retry = "failed" in self.settings.retry_on
        if retry and contact.attempts + 1 <= self.settings.max_retries:
            due = now + timedelta(seconds=self.settings.retry_delay)
            state, outcome = "pending", None
        else:
            due, state, outcome = now, "done", "failed"
        await self.store.not_placed(
            contact,
            attempt,
            runner,
            error=reason,
            counts=True,
            state=state,
            due=due,
            outcome=outcome,
            now=now,
        )

    async def _follow(self, contact: Claimed) -> None:
        """Wait for a placed call's outcome, then retry or finish the contact."""
        assert contact.call_sid is not None
        assert self.runner is not None
        while True:
            try:
                outcome = await self.dialer.outcome(contact.call_sid)
            except Exception:
                log.warning(
                    "reading the outcome of %s failed; trying again",
                    contact.call_sid,
                    exc_info=True,
                )
                outcome = None
            if outcome is not None:
                break
            await asyncio.sleep(self.settings.poll_interval)
        kind = classify(outcome)
        placed = contact.attempts  # calls placed so far, this one included
        now = self.clock()
        retry_at = None
        if kind in self.settings.retry_on and placed <= self.settings.max_retries:
            retry_at = now + timedelta(seconds=self.settings.retry_delay)
        # The flow ran only on an answered call: otherwise its initial state is no result.
        result = (
            outcome.data.get(self.settings.result_key, outcome.state)
            if outcome.status == "completed"
            else None
        )
        await self.store.ended(
            contact,
            self.runner,
            status=outcome.status,
            answered_by=outcome.answered_by,
            ended_at=time.time(),
            retry_at=retry_at,
            outcome=kind,
            result=None if result is None else str(result),
            now=now,
        )


_STATES = ("pending", "claimed", "requesting", "placed", "done")


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _with_sid(contact: Claimed, call_sid: str) -> Claimed:
    """The contact as stored after ``placed``: its CallSid, one more attempt."""
    return Claimed(
        id=contact.id,
        row=contact.row,
        number=contact.number,
        time_zone=contact.time_zone,
        data=contact.data,
        attempts=contact.attempts + 1,
        call_sid=call_sid,
    )
