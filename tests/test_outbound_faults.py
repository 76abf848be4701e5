"""Failure paths of outbound calls: the AMD callback and the placed call's first webhook
release what they hold and answer in time, whatever fails (the flow, the store, time)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3

import pytest
from sqlalchemy.engine import make_url

from flows.appointment_reminder import AppointmentReminder
from ivrkit import Call, Flow, Hangup, Say, decision
from ivrkit.outbound import arrival
from ivrkit.outbound.place import placed_record
from tests.conftest import phone
from tests.driver import BASE

DEADLINE = 0.5


class Fragile(Flow):
    """A reminder whose machine state runs code that fails."""

    on_machine = "for_machines"
    hello = Say("Hello.", then="ask")
    ask = Say("Goodbye.", then=Hangup())

    @decision("for_machines")
    def broken(self, call: Call) -> str:
        if not call.data.get("service_up"):
            raise RuntimeError("the message service is down")
        return "ask"


async def started(app, client, flow: type[Flow], name: str, *, amd: str = "async"):
    call = phone(client, name)
    record = placed_record(flow, call.sid, to="+14155550142", data={"appointment": "Monday"})
    await app.state.ivr.store.prepare_call(record)
    await call.post(f"{BASE}/voice/{name}?placed=1&amd={amd}")
    return call


async def test_a_flow_that_fails_moving_a_machine_leaves_the_call_where_it_was(serve, caplog):
    async with serve([Fragile]) as (app, client):
        call = phone(client, "fragile")
        record = placed_record(Fragile, call.sid, to="+14155550142", data={})
        await app.state.ivr.store.prepare_call(record)
        first = await call.post(f"{BASE}/voice/fragile?placed=1&amd=async")
        assert first.said() == ["Hello.", "Goodbye."]
        with caplog.at_level(logging.ERROR, "ivrkit.outbound"):
            amd = await call.post(f"{BASE}/voice/fragile/amd", AnsweredBy="machine_end_beep")
        assert amd.status == 204
        assert "flow fragile failed moving to for_machines" in caplog.text
        row = await app.state.ivr.store.load(call.sid)
        assert (row.step, row.state) == (1, "ask>hangup")  # nothing of the move was kept
        kinds = [e.kind for e in await app.state.ivr.store.call_events(call.sid)]
        assert kinds == ["placed", "start", "error"]
        # The call's lock was given back: its next callback is applied.
        done = await call.post(f"{BASE}/voice/fragile/status", CallStatus="completed")
        assert done.status == 204
        assert (await app.state.ivr.store.load(call.sid)).status == "completed"


async def test_a_flow_that_fails_at_a_sync_machine_start_gets_the_apology(serve):
    async with serve([Fragile]) as (app, client):
        call = phone(client, "fragile")
        await app.state.ivr.store.prepare_call(
            placed_record(Fragile, call.sid, to="+14155550142", data={})
        )
        first = await call.post(f"{BASE}/voice/fragile?placed=1", AnsweredBy="machine_end_beep")
        assert first.status == 200
        assert first.said()[0] == Fragile.apology
        row = await app.state.ivr.store.load(call.sid)
        assert row.step == 0  # still the placed row: nothing half-started was stored
        again = await call.post(f"{BASE}/voice/fragile?placed=1", AnsweredBy="human")
        assert again.said() == ["Hello.", "Goodbye."]  # the lock and the row were released


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_amd_and_status_callbacks_get_503_in_time_while_the_store_is_locked(
    serve, database_url, caplog
):
    async with serve([AppointmentReminder], webhook_deadline=DEADLINE) as (app, client):
        call = await started(app, client, AppointmentReminder, "appointment_reminder")
        other = sqlite3.connect(make_url(database_url).database, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # the file's write lock, held by someone else
        try:
            with caplog.at_level(logging.ERROR, "ivrkit.app"):
                amd = await call.post(
                    f"{BASE}/voice/appointment_reminder/amd", AnsweredBy="machine_end_beep"
                )
                status = await call.post(
                    f"{BASE}/voice/appointment_reminder/status",
                    CallStatus="in-progress",
                    AnsweredBy="human",
                )
        finally:
            other.execute("COMMIT")
            other.close()
        assert (amd.status, amd.body) == (503, "storage unavailable\n")
        assert status.status == 503
        assert "AMD callback not done within" in caplog.text
        assert not any(r.exc_info for r in caplog.records)
        # Twilio does not retry an AMD callback; the next ones are applied once it is free.
        again = await call.post(f"{BASE}/voice/appointment_reminder/amd", AnsweredBy="human")
        assert again.status == 204
        assert (await app.state.ivr.store.load(call.sid)).data["answered_by"] == "human"


async def test_a_first_webhook_waiting_for_its_row_past_the_deadline_gets_the_apology(
    serve, monkeypatch
):
    monkeypatch.setattr(arrival, "ROW_WAIT", 5.0)  # longer than the webhook may take
    async with serve([AppointmentReminder], webhook_deadline=DEADLINE) as (app, client):
        call = phone(client, "appointment_reminder")
        late = await call.post(f"{BASE}/voice/appointment_reminder?placed=1")
        assert late.said()[0] == AppointmentReminder.apology
        assert await app.state.ivr.store.load(call.sid) is None  # nothing left behind
        # The wait was cancelled with the webhook: the row can be stored and the retry
        # starts the flow on it.
        await app.state.ivr.store.prepare_call(
            placed_record(AppointmentReminder, call.sid, to="+1415", data={"appointment": "Monday"})
        )
        retry = await call.post(f"{BASE}/voice/appointment_reminder?placed=1")
        assert retry.said()[0] == "Hello, this is Acme Dental reminding you of Monday."


async def test_many_placed_calls_racing_their_rows_each_start_with_their_own_data(serve):
    async with serve([AppointmentReminder]) as (app, client):
        calls = [phone(client, "appointment_reminder") for _ in range(12)]
        url = f"{BASE}/voice/appointment_reminder?placed=1"
        webhooks = [asyncio.create_task(call.post(url)) for call in calls]
        await asyncio.sleep(0.05)
        for index, call in enumerate(calls):
            record = placed_record(
                AppointmentReminder,
                call.sid,
                to="+14155550142",
                data={"appointment": f"day {index}"},
            )
            await app.state.ivr.store.prepare_call(record)
        answers = await asyncio.gather(*webhooks)
        for index, answer in enumerate(answers):
            assert answer.said()[0] == f"Hello, this is Acme Dental reminding you of day {index}."


async def test_a_store_read_failing_while_waiting_for_the_row_still_answers(serve, monkeypatch):
    async with serve([AppointmentReminder]) as (app, client):
        store = app.state.ivr.store

        async def broken_load(call_sid):
            raise ConnectionError("the database went away for a moment")

        monkeypatch.setattr(store, "load", broken_load)
        call = phone(client, "appointment_reminder")
        first = await call.post(f"{BASE}/voice/appointment_reminder?placed=1")
        # The wait gives up at once; the webhook goes on and the flow starts without data.
        assert first.said()[0].startswith("Hello, this is Acme Dental reminding you of your")
        monkeypatch.undo()
        assert (await store.load(call.sid)).step == 1
