"""Placing calls end to end: place_call through the twilio library's real Client, against
the simulated Calls API (simulator/api.py), into the running ivrkit app and its store.

The simulated API plays the far end: it rings, answers as a person or a machine, runs
answering machine detection (sync or AsyncAmd), presses keys, and posts signed status
callbacks, exactly as it would for any TwiML app.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from flows.appointment_reminder import AppointmentReminder
from ivrkit import Settings, create_app
from ivrkit.errors import (
    CallerIdError,
    InvalidNumberError,
    PlaceCallError,
    RateLimitedError,
    TwilioAuthError,
)
from ivrkit.outbound import call_outcome, place_call
from ivrkit.store import CallDataError, create_store
from simulator.api import SimulatedApi
from simulator.callees import Callee, CalleeModel
from simulator.caller import Press
from simulator.pytest_plugin import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN
from simulator.twilio_client import twilio_client
from tests.conftest import OPEN_HOURS, reset_database

PATIENT = "+14155550142"
CLINIC = "+14155550100"
WHEN = "your cleaning on Friday at 3 in the afternoon"
BASE = "http://testserver"
MESSAGE = (
    f"Hello, this is Acme Dental reminding you of {WHEN}. "
    "To confirm, cancel or change it, please call us back. Thank you."
)


@asynccontextmanager
async def reminder_line(database_url: str, api: SimulatedApi) -> AsyncIterator[Any]:
    """The ivrkit app serving appointment_reminder, reached by the simulated API's calls;
    the app moves calls (AsyncAmd) with a twilio Client on the same simulated API."""
    await reset_database(database_url)
    settings = Settings(database_url=database_url, auth_token=TEST_AUTH_TOKEN)
    app = create_app(
        [AppointmentReminder],
        settings=settings,
        clock=lambda: OPEN_HOURS,
        twilio_client=twilio_client(api),
    )
    api.app = app
    api.lifespan = False  # the app's own lifespan runs here, around the whole test
    async with app.router.lifespan_context(app):
        yield app


async def place(app: Any, api: SimulatedApi, to: str = PATIENT, **options: Any) -> str:
    return await place_call(
        AppointmentReminder,
        to=to,
        from_=CLINIC,
        data={"appointment": WHEN, "patient": "p-17"},
        store=app.state.ivr.store,
        client=twilio_client(api),
        public_url=BASE,
        **options,
    )


def said(api: SimulatedApi, sid: str) -> list[str]:
    return [e.text for e in api.calls[sid].events if e.type == "say"]


async def test_a_person_hears_the_reminder_and_confirms(database_url, twilio_api):
    twilio_api.callees = CalleeModel(numbers={PATIENT: Callee(steps=(Press("1"),))})
    async with reminder_line(database_url, twilio_api) as app:
        sid = await place(app, twilio_api)
        ended = await twilio_api.wait(sid)
        assert ended.status == "completed"
        assert said(twilio_api, sid)[:3] == [
            f"Hello, this is Acme Dental reminding you of {WHEN}.",
            "To confirm press 1. To cancel press 2. To pick another day press 3.",
            "Thank you, your appointment is confirmed.",
        ]
        # What Twilio was asked for: the flow's URL marked as placed, every status event,
        # end-of-greeting detection (the flow declares on_machine).
        form = twilio_api.calls[sid].form
        assert form["Url"] == [f"{BASE}/voice/appointment_reminder?placed=1"]
        assert form["StatusCallback"] == [f"{BASE}/voice/appointment_reminder/status?placed=1"]
        assert form["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
        assert form["MachineDetection"] == ["DetectMessageEnd"]
        outcome = await call_outcome(app.state.ivr.store, sid)
        assert outcome.status == "completed"
        assert outcome.answered_by == "human"
        assert outcome.duration == ended.duration
        assert outcome.data["patient"] == "p-17"
        assert outcome.state == "confirmed>next"
        events = [e.kind for e in await app.state.ivr.store.call_events(sid)]
        assert events[0] == "placed"  # stored before any webhook of the call
        assert events.count("start") == 1


async def test_sync_amd_a_machine_gets_the_message_after_the_beep(database_url, twilio_api):
    twilio_api.callees = CalleeModel(numbers={PATIENT: Callee(who="machine")})
    async with reminder_line(database_url, twilio_api) as app:
        sid = await place(app, twilio_api)
        ended = await twilio_api.wait(sid)
        assert ended.answered_by == "machine_end_beep"  # DetectMessageEnd: after the beep
        assert said(twilio_api, sid) == [MESSAGE]
        outcome = await call_outcome(app.state.ivr.store, sid)
        assert (outcome.status, outcome.answered_by) == ("completed", "machine_end_beep")
        assert outcome.state == "leave_message>hangup"


async def test_async_amd_moves_a_machine_from_the_menu_to_the_message(database_url, twilio_api):
    twilio_api.callees = CalleeModel(numbers={PATIENT: Callee(who="machine")})
    async with reminder_line(database_url, twilio_api) as app:
        sid = await place(app, twilio_api, async_amd=True)
        ended = await twilio_api.wait(sid)
        form = twilio_api.calls[sid].form
        assert form["AsyncAmd"] == ["true"]
        assert form["AsyncAmdStatusCallback"] == [f"{BASE}/voice/appointment_reminder/amd"]
        assert said(twilio_api, sid)[-1] == MESSAGE  # moved there once Twilio knew
        assert ended.status == "completed"
        store = app.state.ivr.store
        outcome = await call_outcome(store, sid)
        assert outcome.answered_by == "machine_end_beep"
        assert outcome.state == "leave_message>hangup"
        logged = [e for e in await store.call_events(sid) if e.kind not in ("status", "placed")]
        # The flow started at once (the menu), was moved by the AMD callback, and Twilio's
        # redirect was answered with the move's stored TwiML.
        assert [e.kind for e in logged] == ["start", "amd", "replay"]
        assert logged[0].state == "(start)"
        assert "reminder" in logged[0].fired or "<Gather" in logged[0].twiml
        assert "(answered) -answered_by:machine-> leave_message" in logged[1].fired
        assert logged[2].twiml == logged[1].twiml


async def test_async_amd_a_person_stays_in_the_menu(database_url, twilio_api):
    twilio_api.callees = CalleeModel(numbers={PATIENT: Callee(steps=(Press("2"),))})
    async with reminder_line(database_url, twilio_api) as app:
        sid = await place(app, twilio_api, async_amd=True)
        await twilio_api.wait(sid)
        assert MESSAGE not in said(twilio_api, sid)
        outcome = await call_outcome(app.state.ivr.store, sid)
        assert (outcome.answered_by, outcome.state) == ("human", "cancelled>next")


@pytest.mark.parametrize("result", ["busy", "no-answer", "failed"])
async def test_a_call_nobody_answers_ends_with_twilios_status(database_url, twilio_api, result):
    twilio_api.callees = CalleeModel(numbers={PATIENT: Callee(outcome=result)})
    async with reminder_line(database_url, twilio_api) as app:
        sid = await place(app, twilio_api)
        await twilio_api.wait(sid)
        outcome = await call_outcome(app.state.ivr.store, sid)
        assert outcome.status == result
        assert outcome.state == "reminder"  # the flow never ran
        assert outcome.data == {"appointment": WHEN, "patient": "p-17"}


# -- Twilio's refusals, as typed errors with one clear line ---------------------------------


async def test_an_invalid_number_is_a_clear_error_and_stores_nothing(database_url, twilio_api):
    async with reminder_line(database_url, twilio_api) as app:
        with pytest.raises(InvalidNumberError) as raised:
            await place(app, twilio_api, to="555-not-a-number")
        assert raised.value.code == 21211
        assert "not a valid phone number" in str(raised.value)
        assert "\n" not in str(raised.value)
        assert not twilio_api.calls
        assert await app.state.ivr.store.recent_calls() == []


async def test_a_from_number_not_on_the_account_is_a_caller_id_error(database_url, twilio_api):
    twilio_api.from_numbers = {"+14155550999"}
    async with reminder_line(database_url, twilio_api) as app:
        with pytest.raises(CallerIdError) as raised:
            await place(app, twilio_api)
        assert raised.value.code == 21210
        assert "not a number or verified caller ID" in str(raised.value)


async def test_wrong_credentials_are_an_auth_error_without_the_token(database_url, twilio_api):
    async with reminder_line(database_url, twilio_api) as app:
        wrong = twilio_client(twilio_api, TEST_ACCOUNT_SID, "wrong-token-never-shown")
        with pytest.raises(TwilioAuthError) as raised:
            await place_call(
                AppointmentReminder,
                to=PATIENT,
                from_=CLINIC,
                store=app.state.ivr.store,
                client=wrong,
                public_url=BASE,
            )
        assert raised.value.code == 20003
        assert "wrong-token-never-shown" not in str(raised.value)
        assert "TWILIO_AUTH_TOKEN" in str(raised.value)


async def test_too_many_requests_is_a_rate_limit_error(database_url, twilio_api):
    twilio_api.request_rate = 1.0
    async with reminder_line(database_url, twilio_api) as app:
        placing = [place(app, twilio_api) for _ in range(5)]
        results = await asyncio.gather(*placing, return_exceptions=True)
        refused = [r for r in results if isinstance(r, Exception)]
        assert refused, results
        assert all(isinstance(r, RateLimitedError) for r in refused), refused
        raised = pytest.ExceptionInfo.from_exc_info((type(refused[0]), refused[0], None))
        assert raised.value.code == 20429
        assert "slow down" in str(raised.value)
        await twilio_api.wait_idle()


async def test_an_unreachable_api_is_a_place_call_error(database_url, twilio_api):
    from twilio.rest import Client

    nowhere = Client(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, environment={})
    nowhere.api.base_url = "http://127.0.0.1:9"
    async with reminder_line(database_url, twilio_api) as app:
        with pytest.raises(PlaceCallError, match="cannot reach Twilio's Calls API"):
            await place_call(
                AppointmentReminder,
                to=PATIENT,
                from_=CLINIC,
                store=app.state.ivr.store,
                client=nowhere,
                public_url=BASE,
            )


# -- failure paths of placing ---------------------------------------------------------------


async def test_a_cancelled_place_call_still_stores_the_row_of_the_call_it_placed(
    database_url, twilio_api
):
    twilio_api.callees = CalleeModel(numbers={PATIENT: Callee(steps=(Press("1"),))})
    async with reminder_line(database_url, twilio_api) as app:
        placing = asyncio.create_task(place(app, twilio_api))
        while not twilio_api.calls:  # Twilio has the request: the call exists
            # One loop turn at a time (not a timed sleep): the cancel must land while
            # place_call still awaits the answer or the row, however loaded the machine.
            await asyncio.sleep(0)
        placing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await placing
        (sid,) = twilio_api.calls
        await twilio_api.wait(sid)
        outcome = await call_outcome(app.state.ivr.store, sid)
        assert outcome.data["patient"] == "p-17"  # the row was stored all the same
        assert outcome.state == "confirmed>next"


async def test_data_the_store_cannot_keep_is_refused_before_any_call(database_url, twilio_api):
    async with reminder_line(database_url, twilio_api) as app:
        with pytest.raises(CallDataError, match=r"call.data\['when'\] is a set"):
            await place_call(
                AppointmentReminder,
                to=PATIENT,
                from_=CLINIC,
                data={"when": {"a set"}},
                store=app.state.ivr.store,
                client=twilio_client(twilio_api),
                public_url=BASE,
            )
        assert not twilio_api.calls  # nobody was called


async def test_a_row_that_cannot_be_stored_cancels_the_call(database_url, twilio_api, tmp_path):
    twilio_api.callees = CalleeModel(numbers={PATIENT: Callee(ring_seconds=30)})
    twilio_api.speed = 100.0
    async with reminder_line(database_url, twilio_api):
        broken = create_store(f"sqlite+aiosqlite:///{tmp_path / 'closed.db'}")
        await broken.open()
        await broken.close()  # a store that cannot write: its worker is gone
        with pytest.raises(PlaceCallError, match="could not be stored .*it was canceled"):
            await place_call(
                AppointmentReminder,
                to=PATIENT,
                from_=CLINIC,
                data={"appointment": WHEN},
                store=broken,
                client=twilio_client(twilio_api),
                public_url=BASE,
            )
        (sid,) = twilio_api.calls
        ended = await twilio_api.wait(sid)
        assert ended.callbacks[-1]["CallStatus"] == "canceled"  # Twilio's last word
        assert ended.start_time is None  # never answered: nobody heard a flow without data


async def test_place_call_without_a_store_opens_the_servers_database_beside_it(
    database_url, twilio_api, monkeypatch
):
    """As another process would: on SQLite the placed row is inserted beside the server
    that owns the file, on PostgreSQL through a store of its own."""
    twilio_api.callees = CalleeModel(numbers={PATIENT: Callee(steps=(Press("1"),))})
    monkeypatch.setenv("IVRKIT_DATABASE_URL", database_url)
    monkeypatch.setenv("IVRKIT_PUBLIC_URL", BASE)
    async with reminder_line(database_url, twilio_api) as app:
        sid = await place_call(
            AppointmentReminder,
            to=PATIENT,
            from_=CLINIC,
            data={"appointment": WHEN, "patient": "p-18"},
            client=twilio_client(twilio_api),
        )
        await twilio_api.wait(sid)
        assert said(twilio_api, sid)[0] == f"Hello, this is Acme Dental reminding you of {WHEN}."
        outcome = await call_outcome(app.state.ivr.store, sid)
        assert (outcome.status, outcome.data["patient"]) == ("completed", "p-18")
