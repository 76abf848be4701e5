"""Campaigns against a scripted phone network, on SQLite and PostgreSQL: retries, rate,
concurrency, calling hours, the do-not-call list, stop and resume, API errors."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time
from typing import Any

import pytest

from ivrkit.outbound.calling_hours import CallingHours
from ivrkit.outbound.campaign import Campaign, CampaignSettings
from ivrkit.outbound.campaign_store import CampaignStore
from ivrkit.outbound.contacts import Contact
from ivrkit.outbound.dialer import (
    AuthFailed,
    DialOutcome,
    DialRefused,
    InvalidNumber,
    RateLimited,
)
from tests.campaign_phones import ScriptedPhones, numbers
from tests.conftest import reset_database

FAST = dict(calls_per_second=None, poll_interval=0.01, retry_delay=0.0, heartbeat=0.2)
ALWAYS = CallingHours(time(0, 0), time(0, 0))


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[CampaignStore]:
    await reset_database(database_url)
    opened = CampaignStore.from_url(database_url)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def contacts(phones: list[str], zone: str = "America/New_York") -> list[Contact]:
    return [
        Contact(row=i + 2, number=n, time_zone=zone, data={"name": f"n{i}"})
        for i, n in enumerate(phones)
    ]


async def run(
    store: CampaignStore, phones: ScriptedPhones, people: list[Contact], **settings: Any
) -> tuple[Campaign, Any]:
    options: dict[str, Any] = {**FAST, "calling_hours": ALWAYS, **settings}
    dnc = options.pop("do_not_call", ())
    clock = options.pop("clock", None)
    campaign = Campaign(
        store,
        phones,
        name=options.pop("name", "reminders"),
        flow="appointment_reminder",
        from_="+15005550006",
        settings=CampaignSettings(**options),
        do_not_call=dnc,
        **({"clock": clock} if clock else {}),
    )
    await campaign.load(people)
    report = await campaign.run()
    return campaign, report


async def test_busy_and_no_answer_are_retried_then_given_up(store):
    busy, silent, late = numbers(3)
    phones = ScriptedPhones(
        script={
            busy: [DialOutcome("busy")],
            silent: [DialOutcome("no-answer")],
            late: [DialOutcome("busy"), DialOutcome("completed", "human", {"result": "ok"})],
        }
    )
    _, report = await run(store, phones, contacts([busy, silent, late]), max_retries=2)
    assert Counter(phones.placed_to()) == {busy: 3, silent: 3, late: 2}
    results = {r["number"]: r for r in await store.results(report.campaign_id)}
    assert results[busy]["outcome"] == "busy"
    assert results[silent]["outcome"] == "no-answer"
    assert results[late]["outcome"] == "completed"
    assert results[late]["result"] == "ok"
    assert [results[n]["attempts"] for n in (busy, silent, late)] == [3, 3, 2]
    assert report.finished


async def test_hundreds_of_contacts_one_final_outcome_each_within_rate_and_concurrency(store):
    people = numbers(300)
    script = {}
    for i, number in enumerate(people):
        script[number] = [
            [DialOutcome("completed", "human")],
            [DialOutcome("busy")],
            [DialOutcome("no-answer"), DialOutcome("completed", "human")],
            [DialOutcome("completed", "machine_end_beep")],
            [DialOutcome("failed")],
        ][i % 5]
    phones = ScriptedPhones(script=script, duration=0.01)
    rate = 400.0
    _, report = await run(
        store, phones, contacts(people), calls_per_second=rate, max_in_progress=8, max_retries=1
    )
    results = await store.results(report.campaign_id)
    assert len(results) == 300
    assert all(r["state"] == "done" for r in results)
    assert Counter(r["outcome"] for r in results) == {
        "completed": 120,
        "busy": 60,
        "machine": 60,
        "failed": 60,
    }
    calls = Counter(phones.placed_to())
    assert all(calls[n] == (1 if i % 5 == 0 else 2) for i, n in enumerate(people))
    assert phones.most_at_once() <= 8
    attempts = await store.attempts(report.campaign_id)
    assert len(attempts) == len(phones.calls)
    slots = sorted(a["slot_at"] for a in attempts)
    gaps = [b - a for a, b in zip(slots, slots[1:], strict=False)]
    assert min(gaps) >= 1 / rate - 1e-6
    assert all(a["requested_at"] >= a["slot_at"] for a in attempts)


async def test_stopped_and_resumed_calls_nobody_twice(store):
    people = numbers(40)
    phones = ScriptedPhones(duration=0.05)
    first = Campaign(
        store,
        phones,
        name="stop-me",
        flow="appointment_reminder",
        from_="+15005550006",
        settings=CampaignSettings(**{**FAST, "calling_hours": ALWAYS, "calls_per_second": 100.0}),
    )
    await first.load(contacts(people))
    running = asyncio.create_task(first.run())
    while len(phones.calls) < 10:
        await asyncio.sleep(0.005)
    first.stop()
    stopped = await running
    assert not stopped.finished
    assert stopped.counts.get("claimed", 0) == 0
    called_before = len(phones.calls)
    assert called_before < 40
    _, report = await run(store, phones, contacts(people), name="stop-me")
    assert report.finished
    assert sorted(phones.placed_to()) == sorted(people)


async def test_abort_leaves_placed_calls_for_the_next_run_to_adopt(store):
    people = numbers(6)
    phones = ScriptedPhones(duration=2.0)
    first = Campaign(
        store,
        phones,
        name="abort",
        flow="appointment_reminder",
        from_="+15005550006",
        settings=CampaignSettings(**{**FAST, "calling_hours": ALWAYS}),
    )
    await first.load(contacts(people))
    running = asyncio.create_task(first.run())
    while len(phones.calls) < 6:
        await asyncio.sleep(0.005)
    first.stop()
    first.stop()
    stopped = await running
    # Left placed (a loaded machine may have ended one or two before the abort).
    assert stopped.counts["placed"] >= 1
    assert stopped.counts["placed"] + stopped.counts.get("done", 0) == 6
    _, report = await run(store, phones, contacts(people), name="abort")
    assert report.finished
    assert sorted(phones.placed_to()) == sorted(people)
    assert report.counts["done:completed"] == 6


async def test_calling_hours_in_each_callees_time_zone_with_a_fixed_clock(store):
    # 16:00 UTC: 11:00 in New York (open), 01:00 in Tokyo (closed until 09:00 local).
    now = datetime(2026, 11, 18, 16, 0, tzinfo=UTC)
    new_york = contacts(numbers(3), "America/New_York")
    tokyo = [
        Contact(row=10 + i, number=n, time_zone="Asia/Tokyo", data={})
        for i, n in enumerate(numbers(2, start=100))
    ]
    phones = ScriptedPhones()
    _, report = await run(
        store,
        phones,
        new_york + tokyo,
        calling_hours=CallingHours(time(9), time(20)),
        clock=lambda: now,
        wait=False,
    )
    assert sorted(phones.placed_to()) == sorted(c.number for c in new_york)
    results = {r["number"]: r for r in await store.results(report.campaign_id)}
    for person in tokyo:
        assert results[person.number]["state"] == "pending"
        # 09:00 in Tokyo on the 19th is 00:00 UTC.
        assert results[person.number]["due_at"] == datetime(2026, 11, 19, 0, 0)


async def test_do_not_call_numbers_are_skipped(store):
    people = numbers(5)
    phones = ScriptedPhones()
    _, report = await run(store, phones, contacts(people), do_not_call={people[1], people[3]})
    assert sorted(phones.placed_to()) == sorted([people[0], people[2], people[4]])
    assert report.counts["done:do-not-call"] == 2


async def test_invalid_number_is_a_final_failure_and_429_backs_off(store):
    bad, crowded, fine = numbers(3)
    phones = ScriptedPhones(
        errors={
            bad: [InvalidNumber("The 'To' number is not a valid phone number.", code=21211)],
            crowded: [RateLimited("Too Many Requests", code=20429)],
        }
    )
    _, report = await run(
        store,
        phones,
        contacts([bad, crowded, fine]),
        calls_per_second=50.0,
        rate_limit_backoff=0.2,
    )
    results = {r["number"]: r for r in await store.results(report.campaign_id)}
    assert results[bad]["outcome"] == "failed"
    assert "not a valid phone number" in results[bad]["detail"]
    assert results[crowded]["outcome"] == "completed"
    assert results[crowded]["attempts"] == 1
    assert sorted(phones.placed_to()) == sorted([crowded, fine])
    # After the 429 nobody was sent before the back-off ended.
    refused_at = next(t for n, t in phones.requests if n == crowded)
    later = [t for _, t in phones.requests if t > refused_at]
    assert later
    assert min(later) >= refused_at + 0.2 - 0.01


async def test_refused_credentials_stop_the_campaign_with_a_clear_reason(store):
    people = numbers(5)
    phones = ScriptedPhones(
        errors={
            people[0]: [
                AuthFailed(
                    "Twilio refused the credentials (Twilio error 20003: Authenticate): check "
                    "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
                    code=20003,
                )
            ]
        }
    )
    _, report = await run(store, phones, contacts(people), max_in_progress=1)
    assert report.stop_reason is not None
    assert "TWILIO_AUTH_TOKEN" in report.stop_reason
    assert phones.placed_to() == []
    assert report.counts["pending"] == 5
    await store.reopen_campaign(report.campaign_id, datetime.now(UTC))
    _, again = await run(store, phones, contacts(people))
    assert again.finished
    assert sorted(phones.placed_to()) == sorted(people)


async def test_other_api_errors_count_as_failed_attempts(store):
    (flaky,) = numbers(1)
    phones = ScriptedPhones(errors={flaky: [DialRefused("HTTP 500", code=500)] * 5})
    _, report = await run(store, phones, contacts([flaky]), max_retries=1)
    results = await store.results(report.campaign_id)
    assert results[0]["outcome"] == "failed"
    assert results[0]["attempts"] == 2
    assert phones.placed_to() == []
