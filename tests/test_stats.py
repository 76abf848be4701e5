"""Funnel analytics: exact figures for a known set of calls, on SQLite and PostgreSQL.

Six calls are walked through the real app, then their times are set to a known schedule
(event of step k at T + k² seconds, the call's end 7 s after its last webhook), so every
count, rate and percentile below is worked out by hand.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from flows.support_line import SupportLine
from ivrkit.cli import main
from ivrkit.stats import ENDINGS, funnel
from ivrkit.store.schema import calls, events
from tests.conftest import phone

T0 = datetime(2026, 11, 3, 8, 0)
HOUR = timedelta(hours=1)


def percentile_cont(values: list[float], fraction: float) -> float:
    """PostgreSQL's percentile_cont, worked out in Python for the expectations."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


async def walk_six_calls(client: Any) -> list[str]:
    sids = []
    # 1: silence, a wrong key, sales busy, a message: voicemail
    call = phone(client, "support_line")
    await call.start()
    await call.silence()
    await call.press("9")
    await call.press("1")
    await call.dial_result("busy")
    await call.recorded(5)
    await call.status()
    sids.append(call.sid)
    # 2: support in hours, an agent takes the call: queued
    call = phone(client, "support_line")
    await call.start()
    await call.press("2")
    await call.queue_result("bridged")
    await call.status()
    sids.append(call.sid)
    # 3: sales answers: transferred
    call = phone(client, "support_line")
    await call.start()
    await call.press("1")
    await call.dial_result("completed", 65)
    await call.status()
    sids.append(call.sid)
    # 4: hangs up at the menu: dropped there
    call = phone(client, "support_line")
    await call.start()
    await call.status()
    sids.append(call.sid)
    # 5: voicemail, but says nothing: the IVR says goodbye and hangs up (completed)
    call = phone(client, "support_line")
    await call.start()
    await call.press("3")
    await call.silence()
    await call.status()
    sids.append(call.sid)
    # 6: still ringing sales: in progress
    call = phone(client, "support_line")
    await call.start()
    await call.press("1")
    sids.append(call.sid)
    return sids


async def set_schedule(store: Any, sids: list[str]) -> None:
    """Call i starts at T0 + i hours; its step k at + k² s; it ends 7 s after its last."""
    async with store.engine.begin() as conn:
        for i, sid in enumerate(sids):
            start = T0 + i * HOUR
            steps = (
                await conn.execute(
                    events.select().with_only_columns(events.c.step).where(events.c.call_sid == sid)
                )
            ).scalars()
            last = 0
            for step in set(steps):
                await conn.execute(
                    update(events)
                    .where(events.c.call_sid == sid, events.c.step == step)
                    .values(at=start + timedelta(seconds=step * step), call_created=start)
                )
                last = max(last, step)
            row = (await conn.execute(calls.select().where(calls.c.call_sid == sid))).one()
            ended = start + timedelta(seconds=last * last + 7) if row.ended_at else None
            await conn.execute(
                update(calls)
                .where(calls.c.call_sid == sid)
                .values(created_at=start, ended_at=ended)
            )


async def test_funnel_figures_are_exact(serve: Any) -> None:
    async with serve([SupportLine]) as (app, client):
        store = app.state.ivr.store
        sids = await walk_six_calls(client)
        await set_schedule(store, sids)
        report = await funnel(store, flow="support_line")

    assert report.calls == 6
    assert report.endings == {
        "completed": 1,
        "transferred": 1,
        "queued": 1,
        "voicemail": 1,
        "hung_up": 1,
        "in_progress": 1,
    }
    assert report.ended == 5
    assert report.containment_rate == pytest.approx(2 / 5)

    reached = {s.state: s.reached for s in report.states}
    assert reached == {
        "welcome": 6,
        "main_menu": 6,
        "sales": 3,
        "voicemail": 2,
        "thanks": 1,
        "thanks>hangup": 1,
        "support_hours": 1,
        "support_queue": 1,
        "support_queue>hangup": 1,
        "sales>hangup": 1,
        "no_message": 1,
        "goodbye": 1,
    }
    menu = report.state("main_menu")
    assert (menu.dropped, menu.answers, menu.no_input, menu.no_match, menu.give_ups) == (
        1,
        7,  # call 1 answered three times, call 4 never
        1,
        1,
        0,
    )
    assert menu.no_input_rate == pytest.approx(1 / 7)
    assert menu.drop_off_rate == pytest.approx(1 / 6)
    assert sum(s.dropped for s in report.states) == 1

    # Visits of main_menu: call 1 stays 3, 5 and 7 s (silence, wrong key, key 1); calls
    # 2, 3, 5 and 6 leave after 3 s; call 4 hangs up 7 s after its only webhook.
    menu_visits = [3.0, 5.0, 7.0, 3.0, 3.0, 7.0, 3.0, 3.0]
    assert menu.median_seconds == pytest.approx(percentile_cont(menu_visits, 0.5), abs=0.002)
    assert menu.p90_seconds == pytest.approx(percentile_cont(menu_visits, 0.9), abs=0.002)
    sales = report.state("sales")  # call 1: 9 s (step 5), call 3: 5 s (step 3)
    assert sales.median_seconds == pytest.approx(7.0, abs=0.002)
    assert sales.p90_seconds == pytest.approx(8.6, abs=0.002)
    assert report.state("goodbye").median_seconds == pytest.approx(7.0, abs=0.002)
    assert report.state("welcome").median_seconds is None  # never waited in

    assert report.transition_counts() == {
        ("welcome", "next", "main_menu"): 6,
        ("main_menu", "no_input", "main_menu"): 1,
        ("main_menu", "no_match", "main_menu"): 1,
        ("main_menu", "press:1", "sales"): 3,
        ("main_menu", "press:2", "support_hours"): 1,
        ("main_menu", "press:3", "voicemail"): 1,
        ("sales", "dial:busy", "voicemail"): 1,
        ("sales", "dial:completed", "sales>hangup"): 1,
        ("support_hours", "goto:support_queue", "support_queue"): 1,
        ("support_queue", "queue:bridged", "support_queue>hangup"): 1,
        ("voicemail", "recorded", "thanks"): 1,
        ("voicemail", "empty", "no_message"): 1,
        ("thanks", "next", "thanks>hangup"): 1,
        ("no_message", "next", "goodbye"): 1,
    }


async def test_period_and_flow_filters(serve: Any) -> None:
    async with serve([SupportLine]) as (app, client):
        store = app.state.ivr.store
        sids = await walk_six_calls(client)
        await set_schedule(store, sids)
        # Calls 3 and 4 (0-based 2 and 3) started in [T0 + 2 h, T0 + 4 h).
        window = await funnel(store, since=T0 + 2 * HOUR, until=T0 + 4 * HOUR)
        other = await funnel(store, flow="no_such_flow")
        everything = await funnel(store)

    assert window.calls == 2
    assert window.endings["transferred"] == 1
    assert window.endings["hung_up"] == 1
    assert window.state("main_menu", "support_line").reached == 2
    assert window.transition_counts("support_line")[("welcome", "next", "main_menu")] == 2
    assert other.calls == 0
    assert other.states == []
    assert other.transitions == []
    assert everything.calls == 6
    assert {s.flow for s in everything.states} == {"support_line"}


async def test_empty_log_gives_zeros(serve: Any) -> None:
    async with serve([SupportLine]) as (app, _):
        report = await funnel(app.state.ivr.store)
    assert report.calls == 0
    assert report.endings == dict.fromkeys(ENDINGS, 0)
    assert report.containment_rate == 0.0


def test_cli_formats(serve: Any, database_url: str, capsys: Any) -> None:
    async def prepare() -> None:
        async with serve([SupportLine]) as (app, client):
            await set_schedule(app.state.ivr.store, await walk_six_calls(client))

    asyncio.run(prepare())  # the command runs its own event loop
    assert main(["stats", "support_line", "--database-url", database_url, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["calls"] == 6
    assert data["containment_rate"] == 0.4
    assert {s["state"]: s["dropped"] for s in data["states"]}["main_menu"] == 1

    assert main(["stats", "--database-url", database_url, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    menu = next(r for r in rows if r["kind"] == "state" and r["state"] == "main_menu")
    assert (menu["reached"], menu["dropped"], menu["no_input"]) == ("6", "1", "1")
    edges = {
        (r["state"], r["trigger"], r["dest"]): r["count"] for r in rows if r["kind"] == "transition"
    }
    assert edges[("main_menu", "press:1", "sales")] == "3"

    since, until = (T0 + 2 * HOUR).isoformat(), (T0 + 4 * HOUR).isoformat() + "+00:00"
    args = ["stats", "--database-url", database_url, "--since", since, "--until", until]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith("all flows: 2 call(s), started from 2026-11-03 10:00:00")
    assert "support_line.main_menu" in text
    assert "        2  support_line.welcome -next-> main_menu" in text


def test_cli_refuses_a_bad_date(capsys: Any, tmp_path: Any) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'none.db'}"
    assert main(["stats", "--database-url", url, "--since", "yesterday"]) == 2
    assert "'yesterday' is not a date" in capsys.readouterr().err


def test_cli_says_when_there_is_no_event_log(capsys: Any, tmp_path: Any) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    assert main(["stats", "--database-url", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ivrkit: cannot read the event log: no such table")
    assert "Traceback" not in err


async def test_a_failing_half_gives_back_both_connections(tmp_path: Any) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'half.db'}")
    async with engine.begin() as conn:  # events but no calls table: both halves fail
        await conn.run_sync(events.create)
    with pytest.raises(Exception, match="no such table: ivrkit_calls"):
        await funnel(engine)
    assert engine.pool.checkedout() == 0
    async with engine.begin() as conn:
        await conn.run_sync(calls.create)
    assert (await funnel(engine)).calls == 0  # the next report is answered
    await engine.dispose()


async def test_a_cancelled_report_releases_its_connections(postgres_url: str) -> None:
    """A report stuck behind a lock (PostgreSQL; SQLite readers never wait for one) is
    cancelled: nothing stays checked out, and the next report is answered once the lock
    is gone."""
    database_url = postgres_url
    from sqlalchemy import text

    from ivrkit.stats import engine_for
    from tests.conftest import opened_store

    async with opened_store(database_url):
        pass  # the tables exist
    engine = engine_for(database_url)
    holder = engine_for(database_url)
    try:
        async with holder.connect() as blocking:
            await blocking.execute(text("LOCK TABLE ivrkit_events IN ACCESS EXCLUSIVE MODE"))
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(funnel(engine), timeout=1.0)
            assert engine.pool.checkedout() == 0
            await blocking.rollback()
        assert set((await funnel(engine)).endings) == set(ENDINGS)  # answered again
        assert engine.pool.checkedout() == 0
    finally:
        await holder.dispose()
        await engine.dispose()
