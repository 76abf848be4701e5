"""A campaign's state in the call store's database: contacts, attempts, runners, the rate.

Every contact moves through one state machine, and every move is a single conditional
UPDATE that names the runner holding the contact, so a runner that lost a contact (it
was presumed dead and its contacts were taken over) finds out instead of calling::

    pending --claim--> claimed --start_request--> requesting --placed--> placed
       ^                  |                           |                    |
       |  release (hours, |                           | refused (answered  | ended: retry
       |  stop, 429)      v                           | error, no call)    | or final
       +------------------+---------------------------+--------------------+--> done

What a runner killed between two steps leaves behind, and what the next runner does:

- ``claimed``: no request was sent. Returned to ``pending``; called later as usual.
- ``requesting``: the attempt was written *before* the request was sent, so the request
  may have created a call whose CallSid was never recorded. It is never called again:
  it becomes ``done`` with the outcome ``unknown`` (the results say so; check by hand).
  The window is one HTTP request long.
- ``placed``: the CallSid was recorded; the next runner adopts the call and reads its
  outcome, then retries or finishes it like its own.

A runner is dead when its heartbeat is older than ``stale_after``, or at once when it ran
on this host and its process is gone, or when it stopped gracefully. Only one runner
takes a dead runner's contacts over (the runner's row changes state once).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Select, event, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ivrkit.outbound.contacts import Contact
from ivrkit.store.migrate import upgrade
from ivrkit.store.schema import (
    SCHEMA_LOCK,
    call_rates,
    campaign_attempts,
    campaign_contacts,
    campaign_runners,
    campaigns,
)

contacts_t = campaign_contacts
BUSY = ("claimed", "requesting", "placed")
"""Contact states that hold one of the campaign's in-progress places."""


@dataclass(frozen=True, slots=True)
class Claimed:
    """A contact a runner holds, as the database had it when claimed."""

    id: int
    row: int
    number: str
    time_zone: str
    data: dict[str, Any]
    attempts: int
    call_sid: str | None = None


def normalise_url(database_url: str) -> str:
    """The async driver URL for what users write (``postgres://``, ``sqlite:///``)."""
    for plain, driver in (
        ("postgres://", "postgresql+asyncpg://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("sqlite:///", "sqlite+aiosqlite:///"),
    ):
        if database_url.startswith(plain):
            return driver + database_url[len(plain) :]
    return database_url


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The campaign shares the file with `ivrkit serve` (another process): WAL lets its
    # webhooks read while the campaign writes, and both wait briefly for the other's lock.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _to_utc_naive(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (signal 0 checks, sends nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CampaignStore:
    """Campaign tables on their own engine: the runner may live in another process than
    ``ivrkit serve`` (SQLite: the same file, in WAL mode; PostgreSQL: the same database)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.host = socket.gethostname()

    @classmethod
    def from_url(cls, database_url: str) -> CampaignStore:
        url = normalise_url(database_url)
        if url.startswith("sqlite"):
            # One connection: the runner's own transactions queue here, in order, instead
            # of sleeping in SQLite's busy handler against each other for the file's lock.
            engine = create_async_engine(url, pool_size=1, max_overflow=0)
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        elif url.startswith("postgresql"):
            engine = create_async_engine(url, pool_size=5, max_overflow=5)
        else:
            raise ValueError(
                f"unsupported DATABASE_URL scheme in {url.split('://')[0]!r}: "
                "use sqlite+aiosqlite:///path.db or postgresql+asyncpg://user@host/db"
            )
        return cls(engine)

    async def open(self) -> None:
        """Create or migrate the schema, as the call store does (PostgreSQL: under the same
        advisory lock, so a runner and a server starting together do not race)."""
        async with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
            await conn.run_sync(upgrade)

    async def close(self) -> None:
        await self.engine.dispose()

    # -- campaigns -------------------------------------------------------------------

    async def create_or_resume(
        self, name: str, *, flow: str, from_number: str, contacts: Iterable[Contact], now: datetime
    ) -> tuple[int, bool]:
        """The campaign's id and whether it was created now (False: it existed, and its
        contacts are the ones stored then; the file given now is not read again)."""
        stamp = _to_utc_naive(now)
        async with self.engine.begin() as conn:
            found = await self._campaign_id(conn, name)
            if found is not None:
                return found, False
            values = {
                "name": name,
                "flow": flow,
                "from_number": from_number,
                "state": "running",
                "created_at": stamp,
                "updated_at": stamp,
            }
            # Two runners creating it at once: the second waits for the first's commit
            # (unique name) and then resumes it.
            statement = self._insert(campaigns).values(values).on_conflict_do_nothing()
            result = await conn.execute(statement.returning(campaigns.c.id))
            created = result.scalar()
            if created is None:
                found = await self._campaign_id(conn, name)
                assert found is not None
                return found, False
            rows = [
                {
                    "campaign_id": created,
                    "row": c.row,
                    "number": c.number,
                    "time_zone": c.time_zone,
                    "data": orjson.dumps(c.data).decode(),
                    "state": "pending",
                    "due_at": stamp,
                    "attempts": 0,
                    "updated_at": stamp,
                }
                for c in contacts
            ]
            if rows:
                await conn.execute(insert(contacts_t), rows)
            return int(created), True

    async def _campaign_id(self, conn: AsyncConnection, name: str) -> int | None:
        found = await conn.execute(select(campaigns.c.id).where(campaigns.c.name == name))
        value = found.scalar()
        return None if value is None else int(value)

    def _insert(self, table: Any) -> Any:
        return (postgresql_insert if self.dialect == "postgresql" else sqlite_insert)(table)

    async def campaign(self, campaign_id: int) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(campaigns).where(campaigns.c.id == campaign_id))).one()
            return dict(row._mapping)

    async def stop_campaign(self, campaign_id: int, reason: str, now: datetime) -> None:
        """Stop every runner of the campaign (they check before each claim)."""
        await self._set_state(campaign_id, "stopped", reason, now)

    async def reopen_campaign(self, campaign_id: int, now: datetime) -> None:
        """Let a stopped campaign (e.g. after fixed credentials) run again."""
        await self._set_state(campaign_id, "running", None, now)

    async def _set_state(
        self, campaign_id: int, state: str, reason: str | None, now: datetime
    ) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(campaigns)
                .where(campaigns.c.id == campaign_id)
                .values(state=state, stop_reason=reason, updated_at=_to_utc_naive(now))
            )

    # -- runners ---------------------------------------------------------------------

    async def register_runner(self, campaign_id: int, now: datetime) -> str:
        runner = f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        stamp = _to_utc_naive(now)
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(campaign_runners).values(
                    id=runner,
                    campaign_id=campaign_id,
                    host=self.host,
                    pid=os.getpid(),
                    state="running",
                    started_at=stamp,
                    heartbeat_at=stamp,
                )
            )
        return runner

    async def heartbeat(self, runner: str, now: datetime) -> bool:
        """Prove this runner is alive; False when others already took it for dead."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(campaign_runners)
                .where(campaign_runners.c.id == runner, campaign_runners.c.state == "running")
                .values(heartbeat_at=_to_utc_naive(now))
            )
            return bool(result.rowcount)

    async def end_runner(self, runner: str, state: str, now: datetime) -> None:
        """``stopped``: its placed calls may be adopted at once; ``finished``: it holds
        nothing. Contacts it claimed but never requested go back to pending."""
        stamp = _to_utc_naive(now)
        async with self.engine.begin() as conn:
            await conn.execute(
                update(contacts_t)
                .where(contacts_t.c.runner == runner, contacts_t.c.state == "claimed")
                .values(state="pending", runner=None, updated_at=stamp)
            )
            await conn.execute(
                update(campaign_runners)
                .where(campaign_runners.c.id == runner, campaign_runners.c.state == "running")
                .values(state=state, heartbeat_at=stamp)
            )

    async def recover(
        self, campaign_id: int, me: str, now: datetime, *, stale_after: float
    ) -> list[Claimed]:
        """Take over the contacts of dead runners; returns the placed calls now adopted."""
        stamp = _to_utc_naive(now)
        stale = stamp - timedelta(seconds=stale_after)
        async with self.engine.connect() as conn:
            others = (
                await conn.execute(
                    select(
                        campaign_runners.c.id,
                        campaign_runners.c.host,
                        campaign_runners.c.pid,
                        campaign_runners.c.state,
                        campaign_runners.c.heartbeat_at,
                    ).where(
                        campaign_runners.c.campaign_id == campaign_id,
                        campaign_runners.c.id != me,
                        campaign_runners.c.state.in_(("running", "stopped")),
                    )
                )
            ).all()
        dead = [
            r
            for r in others
            if r.state == "stopped"
            or r.heartbeat_at < stale
            or (r.host == self.host and not process_alive(r.pid))
        ]
        adopted: list[Claimed] = []
        for runner in dead:
            async with self.engine.begin() as conn:
                won = await conn.execute(
                    update(campaign_runners)
                    .where(
                        campaign_runners.c.id == runner.id,
                        campaign_runners.c.state == runner.state,
                    )
                    .values(state="dead")
                )
                if not won.rowcount:
                    continue  # another runner took it over first
                mine = contacts_t.c.runner == runner.id
                await conn.execute(
                    update(contacts_t)
                    .where(mine, contacts_t.c.state == "claimed")
                    .values(state="pending", runner=None, updated_at=stamp)
                )
                lost = await conn.execute(
                    update(contacts_t)
                    .where(mine, contacts_t.c.state == "requesting")
                    .values(
                        state="done",
                        outcome="unknown",
                        runner=None,
                        detail=(
                            "the runner stopped during the Calls API request: the call may "
                            "exist, so it is not placed again; check it by hand"
                        ),
                        updated_at=stamp,
                    )
                    .returning(contacts_t.c.id)
                )
                lost_ids = [r[0] for r in lost]
                if lost_ids:
                    await conn.execute(
                        update(campaign_attempts)
                        .where(
                            campaign_attempts.c.contact_id.in_(lost_ids),
                            campaign_attempts.c.status == "requesting",
                        )
                        .values(status="unknown")
                    )
                taken = await conn.execute(
                    update(contacts_t)
                    .where(mine, contacts_t.c.state == "placed")
                    .values(runner=me, updated_at=stamp)
                    .returning(*_CLAIMED)
                )
                adopted.extend(_claimed(r) for r in taken)
        return adopted

    # -- contacts --------------------------------------------------------------------

    async def claim(
        self, campaign_id: int, runner: str, now: datetime, *, max_in_progress: int, limit: int
    ) -> list[Claimed] | None:
        """Due pending contacts, at most ``limit`` and never more than ``max_in_progress``
        held by all runners together; None once the campaign was stopped or this runner
        was taken for dead."""
        stamp = _to_utc_naive(now)
        async with self.engine.begin() as conn:
            # Writing the campaign's row first locks it: claims of one campaign are one at
            # a time across runners, so the count below stays true until the commit.
            locked = await conn.execute(
                update(campaigns)
                .where(campaigns.c.id == campaign_id)
                .values(updated_at=stamp)
                .returning(campaigns.c.state)
            )
            if locked.scalar() != "running":
                return None
            # A runner others took for dead claims nothing more (its heartbeat may not
            # have told it yet).
            alive = await conn.execute(
                select(campaign_runners.c.state).where(campaign_runners.c.id == runner)
            )
            if alive.scalar() != "running":
                return None
            busy = (
                await conn.execute(
                    select(func.count())
                    .select_from(contacts_t)
                    .where(contacts_t.c.campaign_id == campaign_id, contacts_t.c.state.in_(BUSY))
                )
            ).scalar_one()
            room = min(limit, max_in_progress - int(busy))
            if room <= 0:
                return []
            due: Select[Any] = (
                select(contacts_t.c.id)
                .where(
                    contacts_t.c.campaign_id == campaign_id,
                    contacts_t.c.state == "pending",
                    contacts_t.c.due_at <= stamp,
                )
                .order_by(contacts_t.c.due_at, contacts_t.c.id)
                .limit(room)
            )
            if self.dialect == "postgresql":
                due = due.with_for_update(skip_locked=True)
            claimed = await conn.execute(
                update(contacts_t)
                .where(contacts_t.c.id.in_(due.scalar_subquery()))
                .values(state="claimed", runner=runner, updated_at=stamp)
                .returning(*_CLAIMED)
            )
            return sorted((_claimed(r) for r in claimed), key=lambda c: c.row)

    async def release(self, contact: Claimed, runner: str, due: datetime, now: datetime) -> None:
        """Back to pending, due at ``due``, no attempt counted (calling hours, stop, 429)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(contacts_t)
                .where(contacts_t.c.id == contact.id, contacts_t.c.runner == runner)
                .values(
                    state="pending",
                    runner=None,
                    due_at=_to_utc_naive(due),
                    updated_at=_to_utc_naive(now),
                )
            )

    async def start_request(
        self, contact: Claimed, runner: str, *, slot_at: float, requested_at: float, now: datetime
    ) -> int | None:
        """Record the attempt before the request is sent; None when this runner no longer
        holds the contact (then it must not call)."""
        async with self.engine.begin() as conn:
            moved = await conn.execute(
                update(contacts_t)
                .where(
                    contacts_t.c.id == contact.id,
                    contacts_t.c.runner == runner,
                    contacts_t.c.state == "claimed",
                )
                .values(state="requesting", updated_at=_to_utc_naive(now))
            )
            if not moved.rowcount:
                return None
            attempt = await conn.execute(
                insert(campaign_attempts)
                .values(
                    campaign_id=select(contacts_t.c.campaign_id)
                    .where(contacts_t.c.id == contact.id)
                    .scalar_subquery(),
                    contact_id=contact.id,
                    runner=runner,
                    slot_at=slot_at,
                    requested_at=requested_at,
                    status="requesting",
                )
                .returning(campaign_attempts.c.id)
            )
            return int(attempt.scalar_one())

    async def placed(
        self, contact: Claimed, attempt: int, runner: str, call_sid: str, at: float, now: datetime
    ) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(contacts_t)
                .where(contacts_t.c.id == contact.id, contacts_t.c.runner == runner)
                .values(
                    state="placed",
                    call_sid=call_sid,
                    attempts=contacts_t.c.attempts + 1,
                    updated_at=_to_utc_naive(now),
                )
            )
            await conn.execute(
                update(campaign_attempts)
                .where(campaign_attempts.c.id == attempt)
                .values(status="placed", call_sid=call_sid, placed_at=at)
            )

    async def not_placed(
        self,
        contact: Claimed,
        attempt: int,
        runner: str,
        *,
        error: str,
        counts: bool,
        state: str,
        due: datetime,
        outcome: str | None,
        now: datetime,
    ) -> None:
        """The request was answered with an error: no call exists. ``counts`` says whether
        it uses up one of the contact's attempts; ``state`` is pending (retry) or done."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(contacts_t)
                .where(contacts_t.c.id == contact.id, contacts_t.c.runner == runner)
                .values(
                    state=state,
                    runner=None,
                    due_at=_to_utc_naive(due),
                    attempts=contacts_t.c.attempts + (1 if counts else 0),
                    outcome=outcome,
                    detail=error,
                    updated_at=_to_utc_naive(now),
                )
            )
            await conn.execute(
                update(campaign_attempts)
                .where(campaign_attempts.c.id == attempt)
                .values(status="refused", error=error)
            )

    async def ended(
        self,
        contact: Claimed,
        runner: str,
        *,
        status: str,
        answered_by: str | None,
        ended_at: float,
        retry_at: datetime | None,
        outcome: str,
        result: str | None,
        now: datetime,
    ) -> None:
        """The placed call ended: retry it at ``retry_at``, or finish with ``outcome``."""
        values: dict[str, Any] = {
            "runner": None,
            "answered_by": answered_by,
            "result": result,
            "updated_at": _to_utc_naive(now),
        }
        if retry_at is None:
            values.update(state="done", outcome=outcome)
        else:
            values.update(state="pending", due_at=_to_utc_naive(retry_at), outcome=None)
        async with self.engine.begin() as conn:
            await conn.execute(
                update(contacts_t)
                .where(
                    contacts_t.c.id == contact.id,
                    contacts_t.c.runner == runner,
                    contacts_t.c.state == "placed",
                )
                .values(values)
            )
            await conn.execute(
                update(campaign_attempts)
                .where(
                    campaign_attempts.c.contact_id == contact.id,
                    campaign_attempts.c.call_sid == contact.call_sid,
                )
                .values(status=status, answered_by=answered_by, ended_at=ended_at)
            )

    async def finish(
        self, contact: Claimed, runner: str, *, outcome: str, detail: str | None, now: datetime
    ) -> None:
        """Done without a call (do-not-call list, an invalid number)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(contacts_t)
                .where(contacts_t.c.id == contact.id, contacts_t.c.runner == runner)
                .values(
                    state="done",
                    runner=None,
                    outcome=outcome,
                    detail=detail,
                    updated_at=_to_utc_naive(now),
                )
            )

    # -- the shared rate -------------------------------------------------------------

    async def take_slot(self, account: str, interval: float, now: float) -> float:
        """The start of the next free request slot of ``account`` (epoch seconds), taken:
        slots are ``interval`` apart, whichever runner or host takes them."""
        async with self.engine.begin() as conn:
            await conn.execute(
                self._insert(call_rates)
                .values(account=account, next_at=now)
                .on_conflict_do_nothing()
            )
            # One statement reads and moves the slot: two runners can never get the same.
            nxt = call_rates.c.next_at
            taken = await conn.execute(
                update(call_rates)
                .where(call_rates.c.account == account)
                .values(next_at=_greatest(self.dialect, nxt, now) + interval)
                .returning(nxt)
            )
            return float(taken.scalar_one()) - interval

    async def push_back(self, account: str, until: float) -> None:
        """No slot before ``until`` (Twilio answered 429)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(call_rates)
                .where(call_rates.c.account == account, call_rates.c.next_at < until)
                .values(next_at=until)
            )

    # -- reading ---------------------------------------------------------------------

    async def counts(self, campaign_id: int) -> dict[str, int]:
        """Contacts per state (and per outcome for done ones, as ``done:<outcome>``)."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(contacts_t.c.state, contacts_t.c.outcome, func.count())
                .where(contacts_t.c.campaign_id == campaign_id)
                .group_by(contacts_t.c.state, contacts_t.c.outcome)
            )
            counts: dict[str, int] = {}
            for state, outcome, n in rows:
                counts[state] = counts.get(state, 0) + n
                if state == "done":
                    counts[f"done:{outcome}"] = n
            return counts

    async def next_due(self, campaign_id: int) -> datetime | None:
        async with self.engine.connect() as conn:
            due = await conn.execute(
                select(func.min(contacts_t.c.due_at)).where(
                    contacts_t.c.campaign_id == campaign_id, contacts_t.c.state == "pending"
                )
            )
            found: datetime | None = due.scalar()
            return found

    async def results(self, campaign_id: int) -> list[dict[str, Any]]:
        """Every contact with its outcome so far, in the contacts file's order."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(contacts_t)
                .where(contacts_t.c.campaign_id == campaign_id)
                .order_by(contacts_t.c.row)
            )
            return [
                {**r._mapping, "outcome": r.outcome if r.state == "done" else r.state} for r in rows
            ]

    async def attempts(self, campaign_id: int) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(campaign_attempts)
                .where(campaign_attempts.c.campaign_id == campaign_id)
                .order_by(campaign_attempts.c.id)
            )
            return [dict(r._mapping) for r in rows]


def _greatest(dialect: str, column: Any, value: float) -> Any:
    # SQLite's two-argument max() is its GREATEST.
    return func.greatest(column, value) if dialect == "postgresql" else func.max(column, value)


_CLAIMED = (
    contacts_t.c.id,
    contacts_t.c.row,
    contacts_t.c.number,
    contacts_t.c.time_zone,
    contacts_t.c.data,
    contacts_t.c.attempts,
    contacts_t.c.call_sid,
)


def _claimed(row: Any) -> Claimed:
    return Claimed(
        id=row.id,
        row=row.row,
        number=row.number,
        time_zone=row.time_zone,
        data=orjson.loads(row.data),
        attempts=row.attempts,
        call_sid=row.call_sid,
    )
