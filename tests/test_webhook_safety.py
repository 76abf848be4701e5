"""Bad input gets a clear answer and loses nothing; failures still answer valid TwiML."""

from __future__ import annotations

import asyncio
import logging

import pytest

from flows.support_line import SupportLine
from ivrkit import Call, Flow, Hangup, Menu, Retries, Say, Settings, create_app, decision
from ivrkit.errors import ConfigError
from tests.conftest import phone
from tests.driver import BASE, TOKEN, signed_headers


async def test_unsigned_and_badly_signed_webhooks_get_403(serve, caplog):
    async with serve([SupportLine]) as (_, client):
        params = phone(client, "support_line").params()
        url = f"{BASE}/voice/support_line"
        with caplog.at_level(logging.WARNING, "ivrkit.app"):
            unsigned = await client.post(url, data=params)
        assert unsigned.status_code == 403
        assert "X-Twilio-Signature" in caplog.text
        assert TOKEN not in caplog.text
        forged = await client.post(
            url, data=params, headers=signed_headers(url, params, token="wrong-token")
        )
        assert forged.status_code == 403
        tampered = dict(params, From="+19999999999")
        replayed = await client.post(url, data=tampered, headers=signed_headers(url, params))
        assert replayed.status_code == 403


async def test_malformed_requests_get_400_with_reason(serve):
    async with serve([SupportLine]) as (_, client):
        url = f"{BASE}/voice/support_line"
        as_json = await client.post(url, json={"CallSid": "CA1"})
        assert as_json.status_code == 400
        assert "application/x-www-form-urlencoded" in as_json.text
        no_sid = {"From": "+14155550100"}
        missing = await client.post(url, data=no_sid, headers=signed_headers(url, no_sid))
        assert missing.status_code == 400
        assert "CallSid" in missing.text
        action = f"{BASE}/voice/support_line/action"
        call = phone(client, "support_line")
        no_step = await client.post(
            action, data=call.params(), headers=signed_headers(action, call.params())
        )
        assert no_step.status_code == 400


async def test_oversized_body_refused(serve):
    async with serve([SupportLine], max_body_bytes=2048) as (_, client):
        call = phone(client, "support_line")
        big = call.params(Padding="x" * 5000)
        url = f"{BASE}/voice/support_line"
        response = await client.post(url, data=big, headers=signed_headers(url, big))
        assert response.status_code == 413


async def test_retried_webhook_answers_same_twiml_and_fires_nothing(serve):
    async with serve([SupportLine]) as (app, client):
        call = phone(client, "support_line")
        start = await call.start()
        again = await call.start()  # Twilio retried the first request
        assert again.body == start.body
        first = await call.press("1")
        call.last = start
        retry = await call.press("1")
        assert retry.body == first.body
        record = await app.state.ivr.store.load(call.sid)
        assert record.step == 2
        assert record.state == "sales"
        kinds = [e.kind for e in await app.state.ivr.store.call_events(call.sid)]
        assert kinds == ["start", "replay", "action", "replay"]


class Gate:
    """Holds a webhook inside the flow's code until the test lets it go."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.ran: list[str] = []

    async def hold(self, name: str) -> None:
        self.ran.append(name)
        self.entered.set()
        await self.release.wait()


GATE = Gate()


class Gated(Flow):
    menu = Menu(
        "Press 1 or 3.",
        choices={"1": "first", "3": "second"},
        retries=Retries(give_up="bye", no_input_prompt="Hello?", no_match_prompt="No."),
    )
    one = Hangup("You pressed one.")
    three = Hangup("You pressed three.")
    bye = Hangup()

    @decision("first")
    async def first(self, call: Call) -> str:
        await GATE.hold("first")
        return "one"

    @decision("second")
    async def second(self, call: Call) -> str:
        await GATE.hold("second")
        return "three"


async def test_two_concurrent_webhooks_for_one_call_are_serialised(serve):
    global GATE
    GATE = Gate()
    async with serve([Gated]) as (app, client):
        store = app.state.ivr.store
        call = phone(client, "gated")
        await call.start()
        first = asyncio.create_task(call.press("1"))
        await GATE.entered.wait()  # the first webhook is inside the flow, holding the call
        second = asyncio.create_task(call.press("3"))
        # The second must queue for the call; were it not serialised, it would load the
        # unsaved step and enter its own decision. Wait for whichever happens.
        for _ in range(100_000):
            if store._turns.waiting(call.sid) or len(GATE.ran) > 1:
                break
            await asyncio.sleep(0)
        assert GATE.ran == ["first"], "the second webhook ran the flow while the first held it"
        assert store._turns.waiting(call.sid) == 1
        GATE.release.set()
        answers = await asyncio.gather(first, second)
        # The first moved the call; the second found its step handled and repeated it.
        assert [a.said() for a in answers] == [["You pressed one."]] * 2
        assert GATE.ran == ["first"]
        record = await store.load(call.sid)
        assert (record.step, record.state) == (2, "one")
        events = await store.call_events(call.sid)
        assert [e.kind for e in events] == ["start", "action", "replay"]
        assert store._turns.waiting(call.sid) == 0


class SlowStart(Flow):
    """A flow whose first turn waits on a lookup, so a retried first webhook overlaps it."""

    initial = "lookup"
    welcome = Menu("Press 1.", choices={"1": "bye"}, retries=Retries(give_up="bye"))
    bye = Hangup()

    @decision("lookup", targets=["welcome"])
    async def lookup(self, call: Call) -> str:
        await asyncio.sleep(0.05)
        return "welcome"


async def test_retried_first_webhook_racing_the_original_gets_the_same_answer(serve):
    """On PostgreSQL both find no row; the insert that comes second replays the first."""
    async with serve([SlowStart]) as (app, client):
        call = phone(client, "slow_start")
        first, retry = await asyncio.gather(call.start(), call.start())
        assert first.status == retry.status == 200
        assert first.body == retry.body
        assert first.said() == ["Press 1."]
        record = await app.state.ivr.store.load(call.sid)
        assert (record.state, record.step) == ("welcome", 1)
        events = await app.state.ivr.store.call_events(call.sid)
        assert sorted(e.kind for e in events) == ["replay", "start"]


async def test_restart_mid_call_continues_from_stored_state(serve, database_url):
    async with serve([SupportLine]) as (_, client):
        call = phone(client, "support_line")
        await call.start()
        await call.press("3")  # now in voicemail
        sid, last = call.sid, call.last
    async with serve([SupportLine], fresh=False) as (_, client):
        resumed = phone(client, "support_line", sid=sid)
        resumed.last = last
        resumed.history.append(last)
        answer = await resumed.recorded(9)
        assert answer.said() == ["Thank you, we will call you back."]


class Fragile(Flow):
    fallback_number = "+15005550199"
    apology = "Sorry, something went wrong. Transferring you."

    welcome = Menu("Press 1.", choices={"1": "lookup"}, retries=Retries(give_up="bye"))
    bye = Hangup()

    @decision("lookup", targets=["bye"])
    def lookup(self, call: Call) -> str:
        raise RuntimeError("billing system timed out")


async def test_exception_in_flow_code_answers_apology_and_transfer(serve, caplog):
    async with serve([Fragile]) as (app, client):
        call = phone(client, "fragile")
        await call.start()
        with caplog.at_level(logging.ERROR, "ivrkit.app"):
            answer = await call.press("1")
        assert answer.status == 200
        assert answer.verbs == ["Say", "Dial", "Hangup"]
        assert answer.said() == ["Sorry, something went wrong. Transferring you."]
        assert answer.find("Dial").text == "+15005550199"
        assert call.sid in caplog.text
        assert "billing system timed out" in caplog.text
        record = await app.state.ivr.store.load(call.sid)
        assert record.state == "welcome"  # nothing of the failed turn was saved
        assert [e.kind for e in await app.state.ivr.store.call_events(call.sid)][-1] == "error"


async def test_unknown_call_sid_on_callback_gets_apology(serve):
    async with serve([SupportLine]) as (_, client):
        call = phone(client, "support_line")
        url = f"{BASE}/voice/support_line/action?state=main_menu&step=1"
        answer = await call.post(url, Digits="1")
        assert answer.status == 200
        assert answer.verbs == ["Say", "Dial", "Hangup"]


async def test_database_down_still_answers_twiml(caplog):
    settings = Settings(
        database_url="postgresql+asyncpg://nobody@127.0.0.1:1/none", auth_token=TOKEN
    )
    app = create_app([SupportLine], settings=settings)
    import httpx

    transport = httpx.ASGITransport(app=app)  # no lifespan: the store never opened
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        call = phone(client, "support_line")
        with caplog.at_level(logging.ERROR):
            answer = await call.start()
        health = await client.get("/healthz")
    assert answer.status == 200
    assert answer.said() == [SupportLine.apology]
    assert answer.find("Dial").text == SupportLine.fallback_number
    assert "storage failed" in caplog.text
    assert health.status_code == 503


async def test_phone_numbers_masked_in_event_log(serve):
    async with serve([SupportLine]) as (app, client):
        call = phone(client, "support_line", from_number="+14155550123")
        await call.start()
        (event,) = await app.state.ivr.store.call_events(call.sid)
        assert event.params["From"] == "+1415*****23"
        assert "+14155550123" not in str(event.params)
        assert (await app.state.ivr.store.load(call.sid)).caller == "+1415*****23"


async def test_route_by_to_number(serve):
    async with serve([SupportLine]) as (_, client):
        call = phone(client, "support_line", to_number="+15005550006")
        answer = await call.post(f"{BASE}/voice")
        assert answer.said()[0] == "Thanks for calling Acme."
        stranger = phone(client, "support_line", to_number="+15550000000")
        unknown = await stranger.post(f"{BASE}/voice")
        assert unknown.said() == ["Sorry, this number is not in service."]


async def post_through_proxy(client):
    """A webhook signed for the public https URL, as a TLS-terminating proxy forwards it."""
    params = phone(client, "support_line").params()
    url = "https://ivr.example.com/voice/support_line"
    headers = {
        **signed_headers(url, params),
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "ivr.example.com",
    }
    return await client.post("/voice/support_line", data=params, headers=headers)


async def test_public_url_and_trusted_proxy_headers(serve):
    async with serve([SupportLine], trusted_proxies=frozenset({"127.0.0.1"})) as (_, client):
        # httpx's ASGI client is 127.0.0.1: a trusted proxy telling us the public URL.
        response = await post_through_proxy(client)
        assert response.status_code == 200
        assert "https://ivr.example.com/voice/support_line/action?" in response.text


async def test_forwarded_headers_ignored_from_untrusted_peers(serve):
    async with serve([SupportLine]) as (_, client):
        response = await post_through_proxy(client)
        assert response.status_code == 403


def test_app_refuses_to_start_without_token():
    with pytest.raises(ConfigError, match="TWILIO_AUTH_TOKEN"):
        create_app([SupportLine], settings=Settings(database_url="sqlite+aiosqlite:///x.db"))


class Greeter(Flow):
    hello = Say("Hello.", then=Hangup())


async def test_insecure_dev_mode_accepts_unsigned(tmp_path, caplog):
    import httpx

    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'd.db'}", insecure_dev=True)
    with caplog.at_level(logging.WARNING):
        app = create_app([Greeter], settings=settings)
    assert "validation is OFF" in caplog.text
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            response = await client.post("/voice/greeter", data={"CallSid": "CA" + "a" * 32})
    assert response.status_code == 200
    assert "<Say>Hello.</Say><Hangup />" in response.text
