"""Twilio's fields are checked before anything touches a store (issue 10, defects 2, 8, 9).

Every refusal is a 400 (or 403/404) with its reason and one log line without a traceback;
the store never sees the request, and the calls in progress carry on.
"""

from __future__ import annotations

import logging

import pytest

from flows.account_pin import AccountPin
from flows.support_line import SupportLine
from ivrkit import Flow, Hangup, Say, SubFlow
from ivrkit.fields import FieldProblem, check_fields
from ivrkit.security import SignatureChecker
from tests.conftest import phone
from tests.driver import BASE, TOKEN, signed_headers


async def post(client, url, params):
    return await client.post(url, data=params, headers=signed_headers(url, params))


def app_records(caplog):
    return [r for r in caplog.records if r.name == "ivrkit.app"]


# (endpoint after /voice/support_line, query, fields to change, what the reason says)
BAD_FIELDS = [
    ("/status", "", {"CallDuration": "²"}, "CallDuration '²' is not a whole number"),
    ("/status", "", {"CallDuration": "9" * 4301}, "(4,301 characters) is not a whole number"),
    ("/status", "", {"CallDuration": "-5"}, "CallDuration '-5' is not a whole number"),
    ("/status", "", {"CallStatus": "hacked"}, "CallStatus 'hacked' is not one of Twilio's"),
    ("", "", {"CallSid": "xyz"}, "CallSid 'xyz' is not Twilio's shape: CA followed by 32 hex"),
    ("", "", {"CallSid": "CA" + "g" * 32}, "is not Twilio's shape"),
    ("", "", {"CallSid": "CA" + "a" * 31 + "\x00"}, "control character"),
    ("", "", {"CallSid": "CA" + "a" * 300}, "(302 characters) is not Twilio's shape"),
    ("", "", {"AccountSid": "AC123"}, "AccountSid 'AC123' is not Twilio's shape: AC followed"),
    ("", "", {"From": "+1415\x00555"}, "field 'From' holds a control character"),
    ("/recording", "?state=voicemail", {"RecordingDuration": "abc"}, "RecordingDuration 'abc'"),
    ("/recording", "?state=voicemail", {"RecordingDuration": "1.5"}, "RecordingDuration '1.5'"),
    ("/recording", "?state=voicemail", {"RecordingSid": "RE-1"}, "RecordingSid 'RE-1'"),
    ("/action", "?state=main_menu&step=%C2%B2", {"Digits": "1"}, "step '²' in the URL"),
    ("/action", "?state=main_menu&step=" + "1" * 12, {"Digits": "1"}, "is not a step number"),
    ("/action", "?state=" + "m" * 201 + "&step=1", {"Digits": "1"}, "is not a state name"),
    ("/action", "?state=main%0Amenu&step=1", {"Digits": "1"}, "is not a state name"),
    ("/hold", "?state=support_queue&x=%00", {}, "URL query field 'x' holds a control"),
    ("/status", "", {"QueueTime": "１２"}, "QueueTime '１２' is not a whole number"),
    ("/action", "?state=main_menu&step=1", {"Digits": "²"}, "Digits holds what no keypad"),
    ("/action", "?state=main_menu&step=1", {"Digits": "1" * 257}, "257 characters"),
]


@pytest.mark.parametrize(("endpoint", "query", "fields", "reason"), BAD_FIELDS)
async def test_bad_field_gets_400_with_its_reason_and_one_log_line(
    serve, caplog, endpoint, query, fields, reason
):
    """Defect 8: these were a 500, a 503 "storage unavailable" or the wrong fallback."""
    async with serve([SupportLine]) as (app, client):
        call = phone(client, "support_line")
        await call.start()
        url = f"{BASE}/voice/support_line{endpoint}{query}"
        caplog.clear()
        with caplog.at_level(logging.INFO):
            response = await post(client, url, call.params(**fields))
        assert response.status_code == 400, response.text
        assert reason in response.text
        records = app_records(caplog)
        assert len(records) == 1, [r.getMessage() for r in records]
        assert reason in records[0].getMessage()
        assert not any(r.exc_info for r in caplog.records)
        store = app.state.ivr.store
        assert [e.kind for e in await store.call_events(call.sid)] == ["start"]
        record = await store.load(call.sid)
        assert (record.step, record.status, record.ended_at) == (1, "ringing", None)


async def test_a_nul_callsid_does_not_affect_calls_in_progress(serve):
    """Defect 2: on PostgreSQL a NUL in a CallSid broke the shared lock connection."""
    async with serve([SupportLine]) as (app, client):
        calls = [phone(client, "support_line") for _ in range(3)]
        for call in calls:
            await call.start()
        url = f"{BASE}/voice/support_line"
        bad = calls[0].params(CallSid="CA\x00" + "a" * 31)
        assert (await post(client, url, bad)).status_code == 400
        for call in calls:
            assert (await call.press("1")).verbs[-1] == "Dial"
        for call in calls:
            assert (await app.state.ivr.store.load(call.sid)).state == "sales"


async def test_repeated_checked_field_is_refused(serve):
    async with serve([SupportLine]) as (_, client):
        call = phone(client, "support_line")
        url = f"{BASE}/voice/support_line"
        body = f"CallSid={call.sid}&CallSid=CA{'b' * 32}&CallStatus=ringing"
        pairs = [("CallSid", call.sid), ("CallSid", "CA" + "b" * 32), ("CallStatus", "ringing")]
        # Signed as Twilio signs a repeated name: every value (so only the rule refuses it).
        signature = SignatureChecker(TOKEN).compute(url, pairs)
        response = await client.post(
            url,
            content=body,
            headers={
                "X-Twilio-Signature": signature,
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        assert response.status_code == 400
        assert "CallSid is sent more than once" in response.text


def test_twilio_shaped_fields_pass():
    sid = "CA" + "0123456789abcdefABCDEF0123456789"
    check_fields(
        [
            ("CallSid", sid),
            ("CallStatus", "no-answer"),
            ("CallDuration", "0"),
            ("RecordingSid", ""),
        ],
        {"CallSid": sid, "CallStatus": "no-answer", "CallDuration": "0", "RecordingSid": ""},
        {"state": "main menu", "step": "123456789"},
    )
    with pytest.raises(FieldProblem, match="CallSid '' is not Twilio's shape"):
        check_fields([("CallSid", "")], {"CallSid": ""}, {})


@pytest.mark.parametrize("endpoint", ["/action?state=s&step=1", "/recording", "/hold", "/status"])
async def test_unsigned_requests_learn_no_flow_names(serve, endpoint):
    """Defect 9: the flow was looked up (404 listing every flow) before the signature."""
    async with serve([SupportLine, AccountPin]) as (_, client):
        call = phone(client, "support_line")
        answers = []
        for flow in ("no_such_flow", "account_pin"):
            response = await client.post(f"{BASE}/voice/{flow}{endpoint}", data=call.params())
            assert response.status_code == 403
            assert "support_line" not in response.text
            answers.append(response.text.replace(flow, "FLOW"))
        # The same answer whether the flow exists or not: nothing to learn from it.
        assert answers[0] == answers[1]


async def test_unknown_flow_is_404_without_the_flow_list(serve, caplog):
    async with serve([SupportLine, AccountPin]) as (_, client):
        call = phone(client, "support_line")
        url = f"{BASE}/voice/no_such_flow/action?state=s&step=1"
        with caplog.at_level(logging.WARNING, "ivrkit.app"):
            response = await post(client, url, call.params())
        assert response.status_code == 404
        assert response.text == "no flow named 'no_such_flow'\n"
        (line,) = [r.getMessage() for r in app_records(caplog)]
        assert "flows loaded: account_pin, support_line" in line


class Helper(Flow):
    """Hands the call to account_pin, so a call of this flow runs in another flow."""

    welcome = SubFlow("account_pin", then="bye")
    bye = Say("Bye.", then=Hangup())


async def test_status_callback_applies_only_to_a_call_of_its_flow(serve, caplog):
    """Defect 9: /voice/<other flow>/status with a live CallSid ended that call."""
    async with serve([SupportLine, AccountPin, Helper]) as (app, client):
        store = app.state.ivr.store
        call = phone(client, "support_line")
        await call.start()
        wrong = f"{BASE}/voice/account_pin/status"
        with caplog.at_level(logging.WARNING, "ivrkit.app"):
            refused = await post(client, wrong, call.params(CallStatus="completed"))
        assert refused.status_code == 404
        assert f"call {call.sid} is not a call of flow 'account_pin'" in refused.text
        assert "the call is in flow 'support_line'" in caplog.text
        record = await store.load(call.sid)
        assert (record.status, record.ended_at) == ("ringing", None)
        assert (await call.status("completed", 42)).status == 204
        record = await store.load(call.sid)
        assert (record.status, record.duration) == ("completed", 42)

        # A call handed to a sub-flow is still a call of the flow that answered it.
        helped = phone(client, "helper")
        await helped.start()
        assert (await store.load(helped.sid)).flow == "account_pin"
        assert (await helped.status("completed", 7)).status == 204
        assert (await store.load(helped.sid)).duration == 7
        # An unknown call is not refused (Twilio may report calls this app never saw).
        stranger = phone(client, "support_line")
        assert (await stranger.status("completed", 1)).status == 204
