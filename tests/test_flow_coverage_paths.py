"""The example flows' remaining branches, so their transition coverage is 100 %.

Each test takes transitions the scenario tests in test_support_line.py and
test_account_and_reminder.py leave out (``pytest --ivr-coverage`` lists them).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from flows.account_pin import AccountPin
from flows.appointment_reminder import AppointmentReminder
from flows.support_line import SupportLine
from tests.conftest import phone

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
DIAL_STATUSES = ("completed", "answered", "busy", "no-answer", "failed", "canceled")
ENDS_WITH_AGENT = (
    "bridged",
    "bridging-in-process",
    "hangup",
    "redirected",
    "redirected-from-bridged",
)
TO_VOICEMAIL = ("leave", "queue-full", "error", "system-error")


@pytest.mark.parametrize("press", ["1", "0"], ids=["sales", "operator"])
async def test_every_dial_status_of_sales_and_operator(serve, press):
    async with serve([SupportLine]) as (_, client):
        for status in DIAL_STATUSES:
            call = phone(client, "support_line")
            await call.start()
            await call.press(press)
            answer = await call.dial_result(status)
            # The operator's on={"*": ...} covers canceled too; sales names only three.
            if status in ("busy", "no-answer", "failed") or (press, status) == ("0", "canceled"):
                assert answer.find("Record").attrib["maxLength"] == "120", status
            else:
                assert answer.verbs == ["Hangup"], status


async def test_every_queue_result(serve):
    async with serve([SupportLine]) as (_, client):
        for result in ENDS_WITH_AGENT + TO_VOICEMAIL:
            call = phone(client, "support_line")
            await call.start()
            await call.press("2")
            answer = await call.queue_result(result)
            if result in TO_VOICEMAIL:
                assert "Record" in answer.verbs, result
            else:
                assert answer.verbs == ["Hangup"], result


@pytest.mark.parametrize(
    ("words", "verb"), [("support please", "Enqueue"), ("a message", "Record")]
)
async def test_spoken_support_and_message(serve, words, verb):
    async with serve([SupportLine]) as (_, client):
        call = phone(client, "support_line")
        await call.start()
        answer = await call.speak(words)
        assert verb in answer.verbs


async def test_account_and_pin_silence_reprompts(serve):
    async with serve([AccountPin]) as (_, client):
        call = phone(client, "account_pin")
        await call.start()
        quiet = await call.silence()
        assert quiet.said() == [
            "Sorry, I didn't hear anything.",
            "Your eight digit account number, please.",
        ]
        await call.press("12345678")
        await call.press("1")
        quiet_pin = await call.silence()
        assert quiet_pin.said() == [
            "Sorry, I didn't hear anything.",
            "Please enter your four digit PIN.",
        ]


@pytest.mark.parametrize(
    ("speak", "heard"),
    [("yes", "Thank you, your appointment is confirmed."), ("confirm", "Thank you, your")],
)
async def test_reminder_spoken_confirmation(serve, speak, heard):
    async with serve([AppointmentReminder], clock=lambda: NOW) as (_, client):
        call = phone(client, "appointment_reminder")
        await call.start()
        assert (await call.speak(speak)).said()[0].startswith(heard)


async def test_reminder_cancel_by_key_and_wrong_key(serve):
    async with serve([AppointmentReminder], clock=lambda: NOW) as (_, client):
        call = phone(client, "appointment_reminder")
        await call.start()
        wrong = await call.press("9")
        assert wrong.said()[0] == "Sorry, that is not a valid choice."
        cancelled = await call.press("2")
        assert cancelled.said()[0].startswith("Your appointment is cancelled.")


async def test_reminder_new_date_reentry_silence_and_give_up(serve):
    async with serve([AppointmentReminder], clock=lambda: NOW) as (_, client):
        call = phone(client, "appointment_reminder")
        await call.start()
        await call.press("3")
        await call.press("1205")
        again = await call.press("2")  # re-enter instead of confirming the read-back
        assert again.said()[0].startswith("Enter the new date as four digits")
        quiet = await call.silence()
        assert quiet.said()[0] == "Sorry, I didn't hear anything."
        await call.silence()
        gave_up = await call.silence()
        assert gave_up.said() == ["We will try again later. Goodbye."]
