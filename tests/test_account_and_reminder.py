"""account_pin and appointment_reminder end to end: entry, validation, read-back, lock-out."""

from __future__ import annotations

from datetime import UTC, datetime

from flows.account_pin import AccountPin
from flows.appointment_reminder import AppointmentReminder
from ivrkit import Flow, Hangup, Say, SubFlow, reveal
from tests.conftest import phone


async def test_account_confirm_then_pin_verifies(serve):
    async with serve([AccountPin]) as (app, client):
        call = phone(client, "account_pin")
        start = await call.start()
        gather = start.find("Gather")
        assert gather.attrib["numDigits"] == "8"
        assert gather.attrib["input"] == "dtmf speech"
        readback = await call.press("12345678")
        assert readback.said() == [
            "You entered 1, 2, 3, 4, 5, 6, 7, 8. Press 1 if that is right, or 2 to enter it again."
        ]
        assert readback.find("Gather").attrib["numDigits"] == "1"
        pin = await call.press("1")
        assert pin.said() == ["Please enter your four digit PIN."]
        done = await call.press("4321")
        assert done.said() == ["Thank you, you are verified."]
        assert done.verbs[-1] == "Hangup"  # Return() at the top level ends the call
        record = await app.state.ivr.store.load(call.sid)
        # Secrets: the account number kept encrypted, the PIN only as the verdict.
        assert set(record.data) == {"account", "pin_ok"}
        assert "12345678" not in record.data["account"]
        assert reveal(record.data["account"]) == "12345678"
        assert record.data["pin_ok"] is True


async def test_account_by_speech_and_reentry(serve):
    async with serve([AccountPin]) as (_, client):
        call = phone(client, "account_pin")
        await call.start()
        readback = await call.speak("eight seven six five four three two one")
        assert "8, 7, 6, 5, 4, 3, 2, 1" in readback.said()[0]
        again = await call.press("2")
        assert again.said() == [
            "Please enter or say your eight digit account number, then press pound."
        ]


async def test_unknown_account_then_give_up(serve):
    async with serve([AccountPin]) as (_, client):
        call = phone(client, "account_pin")
        await call.start()
        wrong = await call.press("11112222")
        assert wrong.said()[0] == "Sorry, I could not find that account."
        short = await call.press("123")  # too short: also a no-match
        assert short.said()[1] == "Your eight digit account number, please."
        gave_up = await call.press("99999999")
        assert gave_up.said() == ["Let me get someone to help you."]


async def test_wrong_pin_three_times_locks_out(serve):
    async with serve([AccountPin]) as (_, client):
        call = phone(client, "account_pin")
        await call.start()
        await call.press("87654321")
        await call.press("1")
        assert (await call.press("0000")).said()[0] == "That PIN is not right."
        await call.press("2222")
        locked = await call.press("3333")
        assert locked.said()[0].startswith("For your security this account is now locked")
        assert locked.verbs[-1] == "Hangup"


class Banking(Flow):
    """A parent line that verifies callers with the account_pin sub-flow and gets them back."""

    welcome = Say("Welcome to Acme banking.", then="verify")
    verify = SubFlow("account_pin", then="balance")
    balance = Say(
        lambda call: f"Account {reveal(call.data['account'])[-4:]}: your balance is 10 dollars.",
        then=Hangup(),
    )


async def test_subflow_returns_to_parent(serve):
    async with serve([Banking, AccountPin]) as (app, client):
        call = phone(client, "banking")
        start = await call.start()
        assert start.said()[0] == "Welcome to Acme banking."
        assert "/voice/account_pin/action?state=account" in start.find("Gather").attrib["action"]
        await call.press("12345678")
        await call.press("1")
        done = await call.press("4321")
        assert done.said() == [
            "Thank you, you are verified.",
            "Account 5678: your balance is 10 dollars.",
        ]
        record = await app.state.ivr.store.load(call.sid)
        assert record.flow == "banking"
        assert record.stack == []


NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


async def test_reminder_confirm_and_cancel(serve):
    async with serve([AppointmentReminder], clock=lambda: NOW) as (_, client):
        call = phone(client, "appointment_reminder")
        start = await call.start()
        assert start.said()[0] == (
            "Hello, this is Acme Dental reminding you of your appointment "
            "tomorrow at 10 in the morning."
        )
        assert (await call.press("1")).said()[0] == "Thank you, your appointment is confirmed."
        other = phone(client, "appointment_reminder")
        await other.start()
        assert (await other.speak("Cancel it")).said()[0].startswith("Your appointment is cancel")


async def test_reminder_reschedule_with_readback(serve):
    async with serve([AppointmentReminder], clock=lambda: NOW) as (app, client):
        call = phone(client, "appointment_reminder")
        await call.start()
        await call.press("3")
        past = await call.press("1301")  # no 13th month
        assert past.said()[0] == "That is not a date in the future."
        readback = await call.press("1205")
        assert readback.said()[0].startswith("You entered 1, 2, 0, 5.")
        done = await call.press("1")
        assert done.said()[0] == "Thank you. We will call you to confirm a time on that day."
        assert (await app.state.ivr.store.load(call.sid)).data["requested_date"] == "1205"


async def test_reminder_unanswered_menu_gives_up(serve):
    async with serve([AppointmentReminder], clock=lambda: NOW) as (_, client):
        call = phone(client, "appointment_reminder")
        await call.start()
        await call.silence()
        await call.silence()
        final = await call.silence()
        assert final.said() == ["We will try again later. Goodbye."]
