"""support_line end to end through the real app: every branch, on SQLite and PostgreSQL."""

from __future__ import annotations

from flows.support_line import SupportLine
from tests.conftest import CLOSED_HOURS, phone

MENU = "For sales press 1."


async def test_welcome_then_menu_in_one_answer(serve):
    async with serve([SupportLine]) as (_, client):
        call = phone(client, "support_line")
        answer = await call.start()
        assert answer.status == 200
        assert answer.content_type.startswith("text/xml")
        assert answer.verbs == ["Say", "Gather", "Redirect"]
        assert answer.said()[0] == "Thanks for calling Acme."
        gather = answer.find("Gather")
        assert gather.attrib["numDigits"] == "1"
        assert gather.attrib["input"] == "dtmf speech"
        assert gather.attrib["action"] == (
            "http://testserver/voice/support_line/action?state=main_menu&step=1"
        )
        assert gather.find("Say").text.startswith(MENU)


async def test_sales_answered_then_call_ends(serve):
    async with serve([SupportLine]) as (_, client):
        call = phone(client, "support_line")
        await call.start()
        answer = await call.press("1")
        dial = answer.find("Dial")
        assert dial.attrib["timeout"] == "20"
        assert dial.attrib["callerId"] == "+15005550006"
        assert dial.find("Number").text == "+15005550111"
        answer = await call.dial_result("completed", 65)
        assert answer.verbs == ["Hangup"]


async def test_sales_busy_and_no_answer_go_to_voicemail(serve):
    async with serve([SupportLine]) as (_, client):
        for outcome in ("busy", "no-answer", "failed"):
            call = phone(client, "support_line")
            await call.start()
            await call.press("1")
            answer = await call.dial_result(outcome)
            assert answer.verbs == ["Say", "Record", "Redirect"], outcome
            record = answer.find("Record")
            assert record.attrib["maxLength"] == "120"
            assert record.attrib["finishOnKey"] == "#"


async def test_voicemail_saved_in_call_data(serve):
    async with serve([SupportLine]) as (app, client):
        call = phone(client, "support_line")
        await call.start()
        await call.press("3")
        answer = await call.recorded(14)
        assert answer.said() == ["Thank you, we will call you back."]
        assert answer.verbs == ["Say", "Hangup"]
        record = await app.state.ivr.store.load(call.sid)
        assert record.data["voicemail"]["duration"] == 14
        assert record.data["voicemail"]["url"].endswith("RE14")


async def test_empty_voicemail(serve):
    async with serve([SupportLine]) as (_, client):
        call = phone(client, "support_line")
        await call.start()
        await call.press("3")
        answer = await call.silence()  # Twilio fell through the Record: nothing recorded
        assert answer.said() == ["We did not get a message.", "Goodbye."]
        assert answer.verbs[-1] == "Hangup"


async def test_support_in_hours_queues_with_hold_music(serve):
    async with serve([SupportLine]) as (_, client):
        call = phone(client, "support_line")
        await call.start()
        answer = await call.press("2")
        enqueue = answer.find("Enqueue")
        assert enqueue.text == "support"
        wait_url = enqueue.attrib["waitUrl"]
        hold = await call.post(wait_url, QueuePosition="1", QueueTime="0")
        assert hold.verbs == ["Say", "Play"]
        assert hold.find("Play").text.endswith(".mp3")
        call.last = answer  # the caller is still in the Enqueue; hold music does not move it
        left = await call.queue_result("leave")
        assert left.find("Record") is not None
        # A bridged call ends with the agent.
        call2 = phone(client, "support_line")
        await call2.start()
        await call2.press("2")
        assert (await call2.queue_result("bridged")).verbs == ["Hangup"]


async def test_support_out_of_hours_goes_to_voicemail(serve):
    async with serve([SupportLine], clock=lambda: CLOSED_HOURS) as (_, client):
        call = phone(client, "support_line")
        await call.start()
        answer = await call.press("2")
        assert answer.said()[0].startswith("Support is open Monday to Friday")
        assert "Record" in answer.verbs


async def test_speech_choice(serve):
    async with serve([SupportLine]) as (_, client):
        call = phone(client, "support_line")
        await call.start()
        answer = await call.speak("Sales, please.")
        assert answer.find("Dial").find("Number").text == "+15005550111"


async def test_no_input_reprompts_short_then_gives_up_to_operator(serve):
    async with serve([SupportLine]) as (_, client):
        call = phone(client, "support_line")
        await call.start()
        first = await call.silence()
        assert first.said() == [
            "Sorry, I didn't hear anything.",
            "Press 1 for sales, 2 for support, 3 for a message, 0 for an operator.",
        ]
        await call.silence()
        third = await call.silence()
        assert third.find("Dial").find("Number").text == "+15005550199"


async def test_wrong_input_counts_separately_from_silence(serve):
    async with serve([SupportLine]) as (_, client):
        call = phone(client, "support_line")
        await call.start()
        await call.silence()
        await call.silence()
        wrong = await call.press("7")  # a no-match: the no-input count (2) must not give up
        assert wrong.said()[0] == "Sorry, that is not a valid choice."
        assert wrong.find("Gather") is not None
        await call.press("8")
        gave_up = await call.press("9")
        assert gave_up.find("Dial").find("Number").text == "+15005550199"


async def test_global_keys_operator_and_repeat(serve):
    async with serve([SupportLine]) as (_, client):
        call = phone(client, "support_line")
        await call.start()
        await call.press("5")
        repeated = await call.press("*")
        assert repeated.find("Gather").find("Say").text.startswith(MENU)  # the full prompt
        operator = await call.press("0")
        assert operator.find("Dial").find("Number").text == "+15005550199"
        busy = await call.dial_result("busy")
        assert busy.find("Record") is not None


async def test_caller_hangs_up_mid_menu_status_callback(serve):
    async with serve([SupportLine]) as (app, client):
        call = phone(client, "support_line")
        await call.start()
        ringing = await call.status("in-progress", 3)
        assert ringing.status == 204
        live = await app.state.ivr.store.load(call.sid)
        assert (live.status, live.ended_at, live.duration) == ("in-progress", None, None)
        answer = await call.status("completed", 7)
        assert answer.status == 204
        record = await app.state.ivr.store.load(call.sid)
        assert record.status == "completed"
        assert record.duration == 7
        assert record.ended_at is not None
        assert record.state == "main_menu"
        logged = (await app.state.ivr.store.call_events(call.sid))[-1]
        assert (logged.kind, logged.state, logged.step) == ("status", "main_menu", 1)
        assert logged.params["CallStatus"] == "completed"
        assert logged.params["From"].count("*") > 0
        stranger = phone(client, "support_line")
        assert (await stranger.status("completed", 1)).status == 204
        assert await app.state.ivr.store.load(stranger.sid) is None


async def test_recording_status_callback_completes_voicemail_data(serve):
    async with serve([SupportLine]) as (app, client):
        call = phone(client, "support_line")
        await call.start()
        answer = await call.press("3")
        callback = answer.find("Record").attrib["recordingStatusCallback"]
        await call.recorded(14)
        result = await call.post(
            callback,
            RecordingUrl="https://api.twilio.com/rec/RE14",
            RecordingSid="RE" + "2" * 32,
            RecordingStatus="completed",
            RecordingDuration="14",
        )
        assert result.status == 204
        saved = (await app.state.ivr.store.load(call.sid)).data["voicemail"]
        assert saved["status"] == "completed"
        assert saved["duration"] == 14
