"""The app's side of an outbound call: the placed row, the first webhook, AnsweredBy, status.

Calls are driven with signed webhooks (tests/driver.py) into the real app and store; the
Calls API side (place_call against the simulated Twilio API) is in test_outbound_calls.py.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from twilio.rest import Client

from flows.appointment_reminder import AppointmentReminder
from ivrkit import Flow, Hangup, Say
from ivrkit.errors import FlowDefinitionError
from ivrkit.outbound import arrival, call_outcome
from ivrkit.outbound.place import placed_record
from tests.conftest import phone
from tests.driver import BASE

WHEN = "your cleaning on Friday at 3 in the afternoon"
CALLEE = "+14155550142"


def placed(call, *, amd: str = "") -> str:
    """The Url place_call gives Twilio (``?placed=1``, plus ``&amd=async``)."""
    return f"{BASE}/voice/{call.flow}?placed=1" + (f"&amd={amd}" if amd else "")


def outbound_call(client, **kwargs):
    call = phone(client, "appointment_reminder", to_number=CALLEE, **kwargs)
    return call


async def prepare(app, call, **data) -> bool:
    record = placed_record(AppointmentReminder, call.sid, to=CALLEE, data=data)
    return await app.state.ivr.store.prepare_call(record)


async def test_a_placed_call_starts_with_its_data_and_a_person_hears_the_menu(serve):
    async with serve([AppointmentReminder]) as (app, client):
        call = outbound_call(client)
        assert await prepare(app, call, appointment=WHEN, patient="p-17")
        row = await app.state.ivr.store.load(call.sid)
        assert (row.step, row.status, row.data["appointment"]) == (0, "queued", WHEN)
        first = await call.post(placed(call), Direction="outbound-api", AnsweredBy="human")
        assert first.said()[0] == f"Hello, this is Acme Dental reminding you of {WHEN}."
        assert first.find("Gather") is not None
        done = await call.press("1")
        assert done.said()[0] == "Thank you, your appointment is confirmed."
        outcome = await call_outcome(app.state.ivr.store, call.sid)
        assert outcome.status is None  # still in progress: no final status yet
        assert outcome.data == {"appointment": WHEN, "patient": "p-17", "answered_by": "human"}
        assert outcome.state == "confirmed>next"


async def test_a_retried_first_webhook_of_a_placed_call_replays_and_fires_nothing(serve):
    async with serve([AppointmentReminder]) as (app, client):
        call = outbound_call(client)
        await prepare(app, call, appointment=WHEN)
        first = await call.post(placed(call), Direction="outbound-api")
        again = await call.post(placed(call), Direction="outbound-api")
        assert again.body == first.body
        row = await app.state.ivr.store.load(call.sid)
        assert row.step == 1
        kinds = [e.kind for e in await app.state.ivr.store.call_events(call.sid)]
        assert kinds == ["placed", "start", "replay"]


async def test_sync_amd_a_machine_gets_the_message_after_the_beep(serve):
    async with serve([AppointmentReminder]) as (app, client):
        call = outbound_call(client)
        await prepare(app, call, appointment=WHEN)
        first = await call.post(placed(call), AnsweredBy="machine_end_beep")
        assert first.verbs == ["Say", "Hangup"]
        assert first.said() == [
            f"Hello, this is Acme Dental reminding you of {WHEN}. "
            "To confirm, cancel or change it, please call us back. Thank you."
        ]
        row = await app.state.ivr.store.load(call.sid)
        assert row.data["answered_by"] == "machine_end_beep"
        start = [e for e in await app.state.ivr.store.call_events(call.sid) if e.kind == "start"]
        assert "(answered) -answered_by:machine-> leave_message" in start[0].fired


@pytest.mark.parametrize("answered_by", ["human", "unknown", "fax"])
async def test_sync_amd_people_and_what_the_flow_names_no_state_for_hear_the_menu(
    serve, answered_by
):
    async with serve([AppointmentReminder]) as (app, client):
        call = outbound_call(client)
        await prepare(app, call, appointment=WHEN)
        first = await call.post(placed(call), AnsweredBy=answered_by)
        assert first.find("Gather") is not None
        assert (await app.state.ivr.store.load(call.sid)).data["answered_by"] == answered_by


async def test_async_amd_the_first_webhook_starts_the_flow_whatever_it_carries(serve):
    async with serve([AppointmentReminder]) as (app, client):
        call = outbound_call(client)
        await prepare(app, call, appointment=WHEN)
        first = await call.post(placed(call, amd="async"), AnsweredBy="machine_start")
        assert first.find("Gather") is not None  # the verdict comes on the AMD callback
        assert "answered_by" not in (await app.state.ivr.store.load(call.sid)).data


async def test_the_first_webhook_that_comes_before_the_row_waits_for_it(serve):
    async with serve([AppointmentReminder]) as (app, client):
        call = outbound_call(client)
        webhook = asyncio.create_task(call.post(placed(call), Direction="outbound-api"))
        await asyncio.sleep(0.3)  # the create answer is slower than Twilio's first request
        assert not webhook.done()
        assert await prepare(app, call, appointment=WHEN)
        first = await webhook
        assert first.said()[0] == f"Hello, this is Acme Dental reminding you of {WHEN}."


async def test_a_first_webhook_whose_row_never_comes_starts_without_it_and_gains_it_later(
    serve, monkeypatch, caplog
):
    monkeypatch.setattr(arrival, "ROW_WAIT", 0.2)
    async with serve([AppointmentReminder]) as (app, client):
        call = outbound_call(client)
        first = await call.post(placed(call))
        assert "your appointment tomorrow at 10 in the morning" in first.said()[0]
        await call.press("2")
        assert not await prepare(app, call, appointment=WHEN, patient="p-17")
        row = await app.state.ivr.store.load(call.sid)
        assert row.data == {"appointment": WHEN, "patient": "p-17"}
        assert row.state == "cancelled>next"
        assert row.step == 2


async def test_an_unmarked_first_webhook_does_not_wait(serve, monkeypatch):
    waited = []
    monkeypatch.setattr(arrival, "ROW_WAIT", 5.0)

    async def spy(*args, **kwargs):
        waited.append(args)
        return False

    monkeypatch.setattr("ivrkit.outbound.wait_for_row", spy)
    async with serve([AppointmentReminder]) as (_, client):
        call = outbound_call(client)
        first = await call.start()  # inbound, or placed by something other than ivrkit
        assert first.find("Gather") is not None
        assert waited == []


async def test_outbound_status_callbacks_are_recorded_with_who_answered(serve):
    async with serve([AppointmentReminder]) as (app, client):
        store = app.state.ivr.store
        call = outbound_call(client)
        await prepare(app, call, appointment=WHEN)
        status_url = f"{BASE}/voice/appointment_reminder/status"
        seen = []
        for value in ("initiated", "ringing"):
            answer = await call.post(status_url, CallStatus=value, SequenceNumber=str(len(seen)))
            assert answer.status == 204
            seen.append((await store.load(call.sid)).status)
        assert seen == ["initiated", "ringing"]
        await call.post(placed(call), AnsweredBy="human")
        await call.press("2")
        done = await call.post(
            status_url, CallStatus="completed", CallDuration="31", AnsweredBy="human"
        )
        assert done.status == 204
        outcome = await call_outcome(store, call.sid)
        assert (outcome.status, outcome.duration, outcome.answered_by) == ("completed", 31, "human")
        assert outcome.final
        assert outcome.data["appointment"] == WHEN


@pytest.mark.parametrize("final", ["busy", "no-answer", "failed", "canceled"])
async def test_a_placed_call_nobody_answered_ends_with_twilios_status(serve, final):
    async with serve([AppointmentReminder]) as (app, client):
        call = outbound_call(client)
        await prepare(app, call, appointment=WHEN)
        status_url = f"{BASE}/voice/appointment_reminder/status"
        await call.post(status_url, CallStatus="ringing")
        await call.post(status_url, CallStatus=final, CallDuration="0")
        outcome = await call_outcome(app.state.ivr.store, call.sid)
        assert (outcome.status, outcome.answered_by, outcome.state) == (final, None, "reminder")
        assert await call_outcome(app.state.ivr.store, "CA" + "9" * 32) is None


async def test_an_amd_callback_with_a_made_up_answered_by_is_refused(serve):
    async with serve([AppointmentReminder]) as (app, client):
        call = outbound_call(client)
        await prepare(app, call, appointment=WHEN)
        answer = await call.post(
            f"{BASE}/voice/appointment_reminder/amd", AnsweredBy="robot", CallStatus="in-progress"
        )
        assert answer.status == 400
        assert "is not one of Twilio's: human, machine_start" in answer.body
        assert (await app.state.ivr.store.load(call.sid)).data == {"appointment": WHEN}


# -- the AMD callback (AsyncAmd) --------------------------------------------------------------


def unreachable_client() -> Client:
    """A real twilio Client whose API answers nothing (a port nobody listens on)."""
    client = Client("AC" + "0" * 32, "not-used", environment={})
    client.api.base_url = "http://127.0.0.1:9"
    return client


async def test_amd_callback_for_a_person_keeps_the_verdict_and_moves_nothing(serve):
    async with serve([AppointmentReminder]) as (app, client):
        call = outbound_call(client)
        await prepare(app, call, appointment=WHEN)
        await call.post(placed(call, amd="async"))
        answer = await call.post(
            f"{BASE}/voice/appointment_reminder/amd",
            AnsweredBy="human",
            MachineDetectionDuration="1800",
        )
        assert answer.status == 204
        row = await app.state.ivr.store.load(call.sid)
        assert (row.state, row.step, row.data["answered_by"]) == ("reminder", 1, "human")


async def test_amd_before_the_first_webhook_makes_the_call_start_in_the_machine_state(serve):
    async with serve([AppointmentReminder]) as (app, client):
        call = outbound_call(client)
        await prepare(app, call, appointment=WHEN)
        amd = await call.post(
            f"{BASE}/voice/appointment_reminder/amd", AnsweredBy="machine_end_silence"
        )
        assert amd.status == 204
        first = await call.post(placed(call, amd="async"))
        assert first.verbs == ["Say", "Hangup"]


async def test_a_machine_move_is_committed_even_when_the_redirect_fails(serve, caplog):
    app_client = unreachable_client()
    async with serve([AppointmentReminder], twilio_client=app_client) as (app, client):
        call = outbound_call(client)
        await prepare(app, call, appointment=WHEN)
        first = await call.post(placed(call, amd="async"))
        menu_action = first.find("Gather").attrib["action"]
        with caplog.at_level(logging.WARNING, logger="ivrkit.outbound"):
            answer = await call.post(
                f"{BASE}/voice/appointment_reminder/amd", AnsweredBy="machine_end_beep"
            )
        assert answer.status == 204
        assert "redirecting the call failed" in caplog.text
        row = await app.state.ivr.store.load(call.sid)
        assert (row.state, row.step) == ("leave_message>hangup", 2)
        # The old menu's Gather, answered late, hears the message, not the next menu step.
        late = await call.post(menu_action, Digits="1")
        assert late.verbs == ["Say", "Hangup"]
        assert (await app.state.ivr.store.load(call.sid)).step == 2


# -- the flow's declaration -----------------------------------------------------------------


def test_an_unknown_machine_state_fails_when_the_class_is_created():
    with pytest.raises(FlowDefinitionError) as raised:

        class Survey(Flow):
            on_machine = "leave_mesage"
            ask = Say("One question.", then=Hangup())
            leave_message = Say("Sorry we missed you.", then=Hangup())

    text = str(raised.value)
    assert "test_outbound_webhooks.py" in text
    assert "Survey" in text
    assert 'on_machine goes to unknown state "leave_mesage"' in text
    assert 'did you mean "leave_message"' in text


def test_an_unknown_answered_by_key_fails_when_the_class_is_created():
    with pytest.raises(FlowDefinitionError, match='"machine_beep" is not an AnsweredBy value'):

        class Survey(Flow):
            on_answered_by = {"machine_beep": "bye"}
            ask = Say("One question.", then="bye")
            bye = Hangup()


def test_answered_by_states_count_as_reachable_and_inline_states_work():
    class Survey(Flow):
        on_answered_by = {"fax": Hangup(), "machine": "message"}
        ask = Say("One question.", then=Hangup())
        message = Say("Sorry we missed you.", then=Hangup())

    assert not [f for f in Survey.findings() if f.code == "IVR006"]
    assert "(answered_by fax)" in Survey.states()


def test_the_graph_draws_who_answered_from_the_first_state():
    from ivrkit import graph

    drawn = graph.render(graph.build_graph([AppointmentReminder]), "mermaid", name="r").decode()
    assert 'reminder -.->|"answered by machine"| leave_message' in drawn


async def test_a_repeated_amd_callback_moves_the_call_once(serve):
    async with serve([AppointmentReminder], twilio_client=unreachable_client()) as (app, client):
        call = outbound_call(client)
        await prepare(app, call, appointment=WHEN)
        await call.post(placed(call, amd="async"))
        amd_url = f"{BASE}/voice/appointment_reminder/amd"
        for _ in range(2):
            assert (await call.post(amd_url, AnsweredBy="machine_end_beep")).status == 204
        row = await app.state.ivr.store.load(call.sid)
        assert (row.state, row.step) == ("leave_message>hangup", 2)  # moved once, not twice
        kinds = [e.kind for e in await app.state.ivr.store.call_events(call.sid)]
        assert kinds == ["placed", "start", "amd", "amd"]


@pytest.mark.parametrize("final", ["busy", "no-answer", "failed"])
async def test_a_final_status_before_the_placed_row_is_kept_once_the_row_arrives(serve, final):
    """Twilio (or the simulator at full speed) may report busy before place_call has
    stored the row: the callback, marked placed=1 like the Url, waits for it."""
    async with serve([AppointmentReminder]) as (app, client):
        call = outbound_call(client)
        status_url = f"{BASE}/voice/appointment_reminder/status?placed=1"

        async def row_a_moment_later() -> None:
            await asyncio.sleep(0.2)
            assert await prepare(app, call, appointment=WHEN)

        storing = asyncio.create_task(row_a_moment_later())
        answer = await call.post(status_url, CallStatus=final, CallDuration="0")
        await storing
        assert answer.status == 204
        outcome = await call_outcome(app.state.ivr.store, call.sid)
        assert (outcome.status, outcome.data["appointment"]) == (final, WHEN)
