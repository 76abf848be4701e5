"""Campaigns end to end: the real place_call through the twilio library's Client, against
the simulated Calls API, into the running app (appointment_reminder) and its store."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import time
from typing import Any

import pytest

from flows.appointment_reminder import AppointmentReminder
from ivrkit.outbound.calling_hours import CallingHours
from ivrkit.outbound.campaign import Campaign, CampaignSettings
from ivrkit.outbound.campaign_store import CampaignStore
from ivrkit.outbound.contacts import Contact
from ivrkit.outbound.twilio_dialer import TwilioDialer
from simulator.api import SimulatedApi
from simulator.callees import Callee, CalleeModel
from simulator.caller import Press
from simulator.twilio_client import twilio_client
from tests.test_outbound_calls import BASE, CLINIC, reminder_line

ALWAYS = CallingHours(time(0), time(0))
QUICK = dict(poll_interval=0.02, retry_delay=0.0, heartbeat=0.5, calling_hours=ALWAYS)


def contact(row: int, number: str) -> Contact:
    return Contact(
        row=row,
        number=number,
        time_zone="America/New_York",
        data={"appointment": f"your visit number {row}", "patient": f"p-{row}"},
    )


async def run_campaign(
    app: Any, api: SimulatedApi, people: list[Contact], **settings: Any
) -> tuple[CampaignStore, Any]:
    store = CampaignStore.from_url(str(app.state.ivr.store.engine.url.render_as_string(False)))
    await store.open()
    dialer = TwilioDialer(
        AppointmentReminder,
        store=app.state.ivr.store,
        client=twilio_client(api),
        public_url=BASE,
    )
    campaign = Campaign(
        store,
        dialer,
        name="reminders",
        flow=AppointmentReminder.name,
        from_=CLINIC,
        settings=CampaignSettings(**{**QUICK, **settings}),
    )
    await campaign.load(people)
    report = await campaign.run()
    return store, report


async def test_a_mixed_campaign_through_the_simulated_api(database_url, twilio_api):
    confirms, busy_then_cancels, never, machine = (
        "+14155550201",
        "+14155550202",
        "+14155550203",
        "+14155550204",
    )
    invalid = "12"  # Twilio answers 21211
    twilio_api.callees = CalleeModel(
        numbers={
            confirms: Callee(steps=(Press("1"),)),
            busy_then_cancels: (Callee(outcome="busy"), Callee(steps=(Press("2"),))),
            never: Callee(outcome="no-answer"),
            machine: Callee(who="machine"),
        },
        ratios={"human": 6, "machine": 2, "busy": 1, "no-answer": 1},
        seed=7,
        steps=(Press("1"),),
    )
    listed = [confirms, busy_then_cancels, never, machine, invalid]
    others = [f"+1415556{n:04d}" for n in range(40)]
    people = [contact(i + 2, n) for i, n in enumerate(listed + others)]
    async with reminder_line(database_url, twilio_api) as app:
        store, report = await run_campaign(
            app, twilio_api, people, max_in_progress=6, calls_per_second=200.0, max_retries=2
        )
        try:
            results = {r["number"]: r for r in await store.results(report.campaign_id)}
            attempts = await store.attempts(report.campaign_id)
        finally:
            await store.close()
    assert report.finished
    assert len(results) == len(people)
    assert all(r["state"] == "done" for r in results.values())
    assert (results[confirms]["outcome"], results[confirms]["result"]) == ("completed", "confirmed")
    assert results[busy_then_cancels]["result"] == "cancelled"
    assert results[busy_then_cancels]["attempts"] == 2
    assert (results[never]["outcome"], results[never]["attempts"]) == ("no-answer", 3)
    assert results[machine]["outcome"] == "machine"
    assert results[machine]["result"] == "leave_message"
    assert results[machine]["answered_by"] == "machine_end_beep"
    assert results[invalid]["outcome"] == "failed"
    assert "not a valid phone number" in results[invalid]["detail"]
    # Every call the API created is one recorded attempt, and no number got more calls
    # than its attempts allow.
    placed = Counter(call.to for call in twilio_api.calls.values())
    assert sum(placed.values()) == sum(1 for a in attempts if a["call_sid"])
    assert {a["call_sid"] for a in attempts if a["call_sid"]} == set(twilio_api.calls)
    assert all(placed[n] == results[n]["attempts"] for n in placed)
    assert max(placed.values()) <= 3
    # Never more than 6 calls alive at once, as the API saw them.
    edges = sorted(
        [(c.created, 1) for c in twilio_api.calls.values()]
        + [(c.end_time, -1) for c in twilio_api.calls.values()],
        key=lambda e: (e[0], e[1]),
    )
    alive = most = 0
    for _, step in edges:
        alive += step
        most = max(most, alive)
    assert most <= 6
    slots = sorted(a["slot_at"] for a in attempts)
    assert min(b - a for a, b in zip(slots, slots[1:], strict=False)) >= 1 / 200 - 1e-6


@pytest.mark.postgres
async def test_two_runners_share_a_campaign_on_postgresql(postgres_url, twilio_api):
    database_url = postgres_url
    twilio_api.callees = CalleeModel(
        ratios={"human": 6, "busy": 2, "no-answer": 1}, seed=3, steps=(Press("1"),)
    )
    people = [contact(i + 2, f"+1415557{i:04d}") for i in range(60)]
    rate = 100.0
    async with reminder_line(database_url, twilio_api) as app:
        url = app.state.ivr.store.engine.url.render_as_string(False)
        stores = [CampaignStore.from_url(url), CampaignStore.from_url(url)]
        runners = []
        for store in stores:
            await store.open()
            runner = Campaign(
                store,
                TwilioDialer(
                    AppointmentReminder,
                    store=app.state.ivr.store,
                    client=twilio_client(twilio_api),
                    public_url=BASE,
                ),
                name="shared",
                flow=AppointmentReminder.name,
                from_=CLINIC,
                settings=CampaignSettings(
                    **{**QUICK, "max_in_progress": 5, "calls_per_second": rate, "max_retries": 1}
                ),
            )
            await runner.load(people)
            runners.append(runner)
        try:
            reports = await asyncio.gather(*(r.run() for r in runners))
            results = await stores[0].results(reports[0].campaign_id)
            attempts = await stores[0].attempts(reports[0].campaign_id)
        finally:
            for store in stores:
                await store.close()
    assert reports[0].campaign_id == reports[1].campaign_id
    assert all(r.finished for r in reports)
    assert all(r["state"] == "done" for r in results)
    # Both runners placed calls, and together never called anyone more than allowed.
    assert {a["runner"] for a in attempts} == {r.runner for r in runners}
    placed = Counter(call.to for call in twilio_api.calls.values())
    by_number = {r["number"]: r for r in results}
    assert all(placed[n] == by_number[n]["attempts"] for n in by_number)
    assert max(placed.values()) <= 2
    assert sum(placed.values()) == len(attempts)
    # One account-wide rate: the slots of both runners, merged, are 1/rate apart.
    slots = sorted(a["slot_at"] for a in attempts)
    assert min(b - a for a, b in zip(slots, slots[1:], strict=False)) >= 1 / rate - 1e-6
