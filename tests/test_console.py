"""The web console: who may see it, what it shows, and the dialpad's simulated calls.

Everything goes through the real app (its store, signed webhooks, event log) over httpx's
ASGI transport; the browser tests (test_console_browser.py) drive it through uvicorn.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from flows.account_pin import AccountPin
from flows.support_line import SupportLine
from ivrkit import Settings, create_app
from ivrkit.console import hash_password, verify_password
from ivrkit.console.auth import COOKIE_NAME, LoginThrottle, SessionSigner, derive_key
from ivrkit.console.calls import SIMULATED_CALLER, scrub
from ivrkit.errors import ConfigError
from tests.conftest import OPEN_HOURS, phone, reset_database
from tests.driver import BASE, TOKEN

CONSOLE_TOKEN = "console-token-for-tests-0123456789"
RAW_NUMBER = "+14155550123"
HTML = {"accept": "text/html"}


def csrf_of(page: str) -> str:
    found = re.search(r'data-csrf="([^"]+)"', page) or re.search(
        r'name="csrf" value="([^"]+)"', page
    )
    assert found, page[:500]
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, secret: str = CONSOLE_TOKEN) -> httpx.Response:
    page = await client.get("/console/login")
    return await client.post(
        "/console/login", data={"csrf": csrf_of(page.text), "secret": secret}
    )


async def csrf_header(client: httpx.AsyncClient) -> dict[str, str]:
    page = await client.get("/console/dialpad")
    assert page.status_code == 200
    return {"x-csrf-token": csrf_of(page.text)}


@pytest.fixture
def console(database_url: str) -> Callable[..., Any]:
    """``async with console(**settings) as (app, client)``: the app with its console."""

    @asynccontextmanager
    async def running(
        flows: list[Any] | None = None, *, client_ip: str = "127.0.0.1", **settings: Any
    ) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
        await reset_database(database_url)
        settings.setdefault("console_token", CONSOLE_TOKEN)
        config = Settings(database_url=database_url, auth_token=TOKEN, **settings)
        app = create_app(flows or [SupportLine, AccountPin], settings=config,
                         clock=lambda: OPEN_HOURS)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=(client_ip, 5000))
            async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
                yield app, client

    return running


# -- on or off --------------------------------------------------------------------------------


async def test_console_is_off_without_a_token_or_insecure_dev(console):
    async with console(console_token=None) as (_, client):
        assert (await client.get("/console/", headers=HTML)).status_code == 404
        assert (await client.get("/console/login")).status_code == 404
        assert (await client.get("/healthz")).status_code == 200


async def test_insecure_dev_without_a_token_opens_it_without_sign_in(console):
    async with console(console_token=None, insecure_dev=True) as (_, client):
        page = await client.get("/console/", headers=HTML)
        assert page.status_code == 200
        assert "support_line" in page.text
        assert "account_pin" in page.text
        assert "dev mode: no sign-in" in page.text


async def test_a_token_requires_sign_in_even_in_insecure_dev(console):
    async with console(insecure_dev=True) as (_, client):
        page = await client.get("/console/", headers=HTML)
        assert page.status_code == 303
        assert page.headers["location"] == "/console/login"


async def test_a_signed_out_visitor_sees_nothing(console):
    async with console() as (_, client):
        await phone(client, "support_line", from_number=RAW_NUMBER).start()
        for path in ("/console/", "/console/calls", "/console/api/calls", "/console/dialpad",
                     "/console/flows/support_line", "/console/flows/support_line/traffic.svg",
                     "/console/calls/live"):
            answer = await client.get(path)
            assert answer.status_code == 401, path
            assert "support_line" not in answer.text
            assert "CA" not in answer.text
        answer = await client.post("/console/dialpad/calls", json={"flow": "support_line"})
        assert answer.status_code == 401


# -- sign-in, session cookie, throttling -------------------------------------------------------


async def test_sign_in_sets_a_signed_http_only_same_site_cookie(console):
    async with console() as (_, client):
        answer = await sign_in(client)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/console/"
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert "Path=/console" in cookie
        assert "Secure" not in cookie  # plain http: a Secure cookie would never come back
        assert (await client.get("/console/", headers=HTML)).status_code == 200


async def test_the_cookie_is_secure_behind_an_https_public_url(console):
    async with console(public_url="https://ivr.example.com") as (_, client):
        answer = await client.get("/console/login")
        assert "Secure" in answer.headers["set-cookie"]


async def test_a_wrong_token_is_refused_and_a_forged_cookie_is_worthless(console):
    async with console() as (_, client):
        answer = await sign_in(client, "not-the-token")
        assert answer.status_code == 401
        assert "Wrong token or password" in answer.text
        assert (await client.get("/console/calls")).status_code == 401
        forged = SessionSigner(derive_key("another secret")).dumps(
            SessionSigner(derive_key(CONSOLE_TOKEN)).loads(
                SessionSigner(derive_key(CONSOLE_TOKEN)).dumps(_signed_in())
            ) or _signed_in()
        )
        client.cookies.set(COOKIE_NAME, forged, path="/console")
        assert (await client.get("/console/calls")).status_code == 401


def _signed_in() -> Any:
    from ivrkit.console.auth import ConsoleSession

    return ConsoleSession(signed_in=True)


def test_session_cookies_expire_and_tampering_shows():
    signer = SessionSigner(derive_key("k"), max_age=60)
    cookie = signer.dumps(_signed_in())
    assert signer.loads(cookie) is not None
    body, mac = cookie.split(".")
    assert signer.loads(body[:-2] + "xx." + mac) is None
    assert signer.loads(cookie, now=__import__("time").time() + 61) is None
    assert signer.loads("garbage") is None
    assert signer.loads(None) is None


async def test_sign_out_ends_the_session(console):
    async with console() as (_, client):
        await sign_in(client)
        page = await client.get("/console/", headers=HTML)
        answer = await client.post("/console/logout", data={"csrf": csrf_of(page.text)})
        assert answer.status_code == 303
        assert (await client.get("/console/calls")).status_code == 401


async def test_failed_sign_ins_are_throttled_per_address(console):
    async with console() as (app, client):
        for _ in range(5):
            assert (await sign_in(client, "wrong")).status_code == 401
        blocked = await sign_in(client)  # even the right token, for now
        assert blocked.status_code == 429
        assert int(blocked.headers["retry-after"]) > 0
        other = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("10.0.0.9", 5000)), base_url=BASE
        )
        async with other:
            assert (await sign_in(other)).status_code == 303


def test_login_throttle_forgets_old_failures_and_is_bounded():
    throttle = LoginThrottle(attempts=2, window=10, size=3)
    throttle.failed("a", now=0)
    throttle.failed("a", now=1)
    assert throttle.retry_after("a", now=2) == 9
    assert throttle.retry_after("a", now=11) == 0
    for who in "bcde":
        throttle.failed(who, now=20)
    assert len(throttle._failures) == 3


async def test_password_hash_sign_in(console):
    for method in ("scrypt", "pbkdf2_sha256"):
        encoded = hash_password("correct horse", method=method)
        assert verify_password("correct horse", encoded)
        assert not verify_password("wrong horse", encoded)
    encoded = hash_password("correct horse")
    async with console(console_token=None, console_password_hash=encoded) as (_, client):
        assert (await sign_in(client, "wrong horse")).status_code == 401
        assert (await sign_in(client, "correct horse")).status_code == 303


def test_a_malformed_password_hash_fails_at_start(tmp_path):
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'c.db'}",
                        auth_token=TOKEN, console_password_hash="md5$abc")
    with pytest.raises(ConfigError, match="IVRKIT_CONSOLE_PASSWORD_HASH"):
        create_app([SupportLine], settings=settings)


# -- CSRF and headers ------------------------------------------------------------------------


async def test_state_changing_requests_need_the_csrf_token(console):
    async with console() as (_, client):
        await sign_in(client)
        good = await csrf_header(client)
        for headers in ({}, {"x-csrf-token": "forged"}):
            answer = await client.post("/console/dialpad/calls", json={"flow": "support_line"},
                                       headers=headers)
            assert answer.status_code == 403
            assert "CSRF" in answer.text
        cross = await client.post("/console/dialpad/calls", json={"flow": "support_line"},
                                  headers={**good, "origin": "https://evil.example"})
        assert cross.status_code == 403
        assert (await client.post("/console/logout", data={})).status_code == 403
        fresh = httpx.AsyncClient(transport=client._transport, base_url=BASE)
        async with fresh:  # no sign-in page seen: no session, no token
            answer = await fresh.post("/console/login", data={"secret": CONSOLE_TOKEN})
            assert answer.status_code == 403
        answer = await client.post("/console/dialpad/calls", json={"flow": "support_line"},
                                   headers=good)
        assert answer.status_code == 200


async def test_security_headers_on_every_answer(console):
    async with console() as (_, client):
        for path in ("/console/login", "/console/calls", "/console/static/console.js",
                     "/console/nowhere"):
            headers = (await client.get(path)).headers
            csp = headers["content-security-policy"]
            assert "frame-ancestors 'none'" in csp, path
            assert "script-src 'self'" in csp, path
            assert "unsafe-inline" not in csp
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["referrer-policy"] == "same-origin"
        page = await client.get("/console/login")
        assert "<script>" not in page.text
        assert " style=" not in page.text
        assert page.headers["cache-control"] == "no-store"


# -- calls: list, filters, timeline, no numbers ------------------------------------------------


async def test_calls_list_filters_and_shows_no_raw_numbers(console):
    async with console() as (_, client):
        first = phone(client, "support_line", from_number=RAW_NUMBER)
        await first.start()
        await first.press("3")
        second = phone(client, "support_line", from_number="+14155550177")
        await second.start()
        await sign_in(client)

        async def sids(**query: str) -> set[str]:
            answer = await client.get("/console/api/calls", params=query)
            assert answer.status_code == 200, answer.text
            return {c["call_sid"] for c in answer.json()["calls"]}

        assert await sids() == {first.sid, second.sid}
        assert await sids(state="voicemail") == {first.sid}
        assert await sids(digits="23") == {first.sid}
        assert await sids(digits="3") == {first.sid}
        assert await sids(call_sid=second.sid[:12]) == {second.sid}
        assert await sids(flow="account_pin") == set()
        assert await sids(date="2000-01-01") == set()
        assert await sids(simulated="1") == set()
        refused = await client.get("/console/api/calls", params={"digits": "0123"})
        assert refused.status_code == 400
        assert "last 2 digits" in refused.json()["error"]
        page = await client.get("/console/calls", params={"digits": "0123"})
        assert page.status_code == 400
        assert "last 2 digits" in page.text
        for path in ("/console/calls", f"/console/calls/{first.sid}", "/console/api/calls",
                     f"/console/api/calls/{first.sid}"):
            text = (await client.get(path)).text
            assert "5550123" not in text, path
            assert "+1415*****23" in text, path


async def test_a_call_timeline_shows_what_was_heard_pressed_and_answered(console):
    async with console() as (_, client):
        call = phone(client, "support_line")
        await call.start()
        await call.press("3")
        await call.recorded(9)
        await call.status("completed", 30)
        await sign_in(client)
        data = (await client.get(f"/console/api/calls/{call.sid}")).json()
        kinds = [entry["kind"] for entry in data["timeline"]]
        assert kinds == ["start", "action", "action", "status"]
        assert data["timeline"][0]["heard"][0] == "Thanks for calling Acme."
        assert data["timeline"][1]["pressed"] == "3"
        assert "recording seconds: 9" in data["timeline"][2]["outcomes"]
        assert "call status: completed" in data["timeline"][3]["outcomes"]
        page = await client.get(f"/console/calls/{call.sid}")
        assert "Pressed: <strong class=\"mono\">3</strong>" in page.text
        assert "TwiML answered" in page.text
        assert "&lt;Record" in page.text


async def test_secret_entries_are_masked_in_the_timeline_and_dialpad(console):
    async with console() as (_, client):
        call = phone(client, "account_pin")
        await call.start()
        await call.press("12345678")
        await call.press("1")
        await call.press("4321")
        await sign_in(client)
        for path in (f"/console/calls/{call.sid}", f"/console/api/calls/{call.sid}"):
            text = (await client.get(path)).text
            assert "12345678" not in text, path
            assert "4321" not in text, path
            assert "****" in text
        headers = await csrf_header(client)
        view = (await client.post("/console/dialpad/calls", json={"flow": "account_pin"},
                                  headers=headers)).json()
        sid = view["call_sid"]
        view = (await client.post(f"/console/dialpad/calls/{sid}",
                                  json={"action": "press", "digits": "12345678#"},
                                  headers=headers)).json()
        shown = str(view["events"])
        assert "12345678" not in shown
        assert "1, 2, 3" not in shown
        assert {"type": "input", "digits": "****"} in view["events"]


def test_scrub_masks_numbers_but_not_dates_or_sids():
    assert scrub("call +14155550123 now") == "call +1415*****23 now"
    assert scrub("415 555 0123") == "4155****23"
    assert scrub("2026-11-18") == "2026-11-18"
    assert scrub("CA1234567890abcdef") == "CA1234567890abcdef"


# -- dialpad -------------------------------------------------------------------------------


async def test_dialpad_walks_a_call_to_voicemail_and_it_shows_as_simulated(console):
    async with console() as (app, client):
        await sign_in(client)
        headers = await csrf_header(client)
        view = (await client.post("/console/dialpad/calls", json={"flow": "support_line"},
                                  headers=headers)).json()
        sid = view["call_sid"]
        assert view["question"]["kind"] == "gather"
        assert view["events"][0] == {"type": "say", "text": "Thanks for calling Acme."}
        wrong = await client.post(f"/console/dialpad/calls/{sid}",
                                  json={"action": "record", "seconds": 3}, headers=headers)
        assert wrong.status_code == 409
        assert "gather" in wrong.json()["error"]
        view = (await client.post(f"/console/dialpad/calls/{sid}",
                                  json={"action": "press", "digits": "3", "since": view["cursor"]},
                                  headers=headers)).json()
        assert view["events"][0] == {"type": "input", "digits": "3"}
        assert view["question"]["kind"] == "record"
        view = (await client.post(f"/console/dialpad/calls/{sid}",
                                  json={"action": "record", "seconds": 6}, headers=headers)).json()
        assert view["ended"]
        assert view["status"] == "completed"
        assert not app.state.console.dialpad.calls
        record = await app.ivr.store.load(sid)
        assert record.caller == SIMULATED_CALLER
        assert record.state.startswith("thanks")
        assert record.status == "completed"  # its status callback came through too
        listed = (await client.get("/console/api/calls", params={"simulated": "1"})).json()
        assert [c["call_sid"] for c in listed["calls"]] == [sid]
        assert listed["calls"][0]["simulated"] is True
        page = await client.get("/console/calls")
        assert "simulated" in page.text


async def test_dialpad_speech_dial_and_bad_answers(console):
    async with console() as (_, client):
        await sign_in(client)
        headers = await csrf_header(client)
        sid = (await client.post("/console/dialpad/calls", json={"flow": "support_line"},
                                 headers=headers)).json()["call_sid"]
        for bad in ({"action": "press", "digits": "1a"}, {"action": "fly"},
                    {"action": "dial", "status": "maybe"}, {"action": "say", "text": "  "}):
            answer = await client.post(f"/console/dialpad/calls/{sid}", json=bad,
                                       headers=headers)
            assert answer.status_code == 400, bad
        view = (await client.post(f"/console/dialpad/calls/{sid}",
                                  json={"action": "say", "text": "sales"},
                                  headers=headers)).json()
        assert view["question"]["kind"] == "dial"
        assert {"type": "input", "speech": "sales"} in view["events"]
        view = (await client.post(f"/console/dialpad/calls/{sid}",
                                  json={"action": "dial", "status": "busy"},
                                  headers=headers)).json()
        assert view["question"]["kind"] == "record"
        view = (await client.post(f"/console/dialpad/calls/{sid}", json={"action": "hangup"},
                                  headers=headers)).json()
        assert view["ended"]
        gone = await client.get(f"/console/dialpad/calls/{sid}")
        assert gone.status_code == 404
        unknown = await client.post("/console/dialpad/calls", json={"flow": "nope"},
                                    headers=headers)
        assert unknown.status_code == 404


async def test_two_answers_at_once_get_one_turn(console):
    async with console() as (_, client):
        await sign_in(client)
        headers = await csrf_header(client)
        sid = (await client.post("/console/dialpad/calls", json={"flow": "support_line"},
                                 headers=headers)).json()["call_sid"]
        url = f"/console/dialpad/calls/{sid}"
        first, second = await asyncio.gather(
            client.post(url, json={"action": "press", "digits": "3"}, headers=headers),
            client.post(url, json={"action": "press", "digits": "1"}, headers=headers),
        )
        assert sorted([first.status_code, second.status_code]) == [200, 409]
        view = (first if first.status_code == 200 else second).json()
        assert view["question"]["kind"] == "record"  # the 3 went through, once
        assert (await client.post(url, json={"action": "hangup"}, headers=headers)).json()[
            "ended"
        ]


async def test_live_simulated_calls_are_capped(console):
    async with console() as (app, client):
        app.state.console.dialpad.max_live = 2
        await sign_in(client)
        headers = await csrf_header(client)
        sids = []
        for _ in range(2):
            answer = await client.post("/console/dialpad/calls", json={"flow": "support_line"},
                                       headers=headers)
            sids.append(answer.json()["call_sid"])
        full = await client.post("/console/dialpad/calls", json={"flow": "support_line"},
                                 headers=headers)
        assert full.status_code == 429
        assert "hang one up" in full.json()["error"]
        await client.post(f"/console/dialpad/calls/{sids[0]}", json={"action": "hangup"},
                          headers=headers)
        again = await client.post("/console/dialpad/calls", json={"flow": "support_line"},
                                  headers=headers)
        assert again.status_code == 200


async def test_idle_simulated_calls_are_hung_up_by_the_reaper(console):
    async with console() as (app, client):
        dialpad = app.state.console.dialpad
        dialpad.idle_seconds = 0.2
        await sign_in(client)
        headers = await csrf_header(client)
        sid = (await client.post("/console/dialpad/calls", json={"flow": "support_line"},
                                 headers=headers)).json()["call_sid"]
        for _ in range(100):
            if not dialpad.calls:
                break
            await asyncio.sleep(0.05)
        assert not dialpad.calls
        record = await app.ivr.store.load(sid)
        assert record.status == "completed"  # hung up at the menu, status callback sent
        assert dialpad._reaper is not None
        await asyncio.wait_for(dialpad._reaper, 5)  # it stops when no call is live


async def test_a_stuck_simulated_call_is_cancelled_and_its_call_released(console):
    from ivrkit import Flow, Hangup, Menu, Retries, decision

    release = asyncio.Event()

    class Slow(Flow):
        """A flow whose decision hangs until the test lets it go."""

        welcome = Menu("Press 1.", choices={"1": "wait"},
                       retries=Retries(no_input=1, no_match=1, give_up="bye"))
        bye = Hangup("Bye.")

        @decision("wait")
        async def wait_forever(self, call: Any) -> str:
            await release.wait()
            return "bye"

    async with console([Slow, SupportLine]) as (app, client):
        dialpad = app.state.console.dialpad
        dialpad.answer_wait = 0.3
        await sign_in(client)
        headers = await csrf_header(client)
        sid = (await client.post("/console/dialpad/calls", json={"flow": "slow"},
                                 headers=headers)).json()["call_sid"]
        view = (await client.post(f"/console/dialpad/calls/{sid}",
                                  json={"action": "press", "digits": "1"},
                                  headers=headers)).json()
        assert view["question"] is None
        assert not view["ended"]
        sim = dialpad.calls[sid]
        await dialpad._end(sim, grace=0.1)
        assert sim.task is not None
        assert sim.task.cancelled()
        assert sid not in dialpad.calls
        async with asyncio.timeout(5):  # the call's lock was given back
            async with app.ivr.store.session(sid) as session:
                assert session.record is not None
        other = await client.post("/console/dialpad/calls", json={"flow": "support_line"},
                                  headers=headers)
        assert other.status_code == 200
        release.set()


async def test_shutdown_ends_live_simulated_calls(console):
    async with console() as (app, client):
        await sign_in(client)
        headers = await csrf_header(client)
        await client.post("/console/dialpad/calls", json={"flow": "support_line"},
                          headers=headers)
        dialpad = app.state.console.dialpad
        tasks = [sim.task for sim in dialpad.calls.values()]
        assert tasks
    assert all(task is not None and task.done() for task in tasks)
    assert not dialpad.calls
    assert dialpad.closed


# -- flows and the traffic map ------------------------------------------------------------------


async def test_flow_page_draws_the_traffic_map(console):
    async with console() as (app, client):
        app.state.console.graphviz = False  # the console's own layout (Graphviz: below)
        call = phone(client, "support_line")
        await call.start()
        await call.press("3")
        await call.recorded(5)
        await call.status("completed", 20)
        gone = phone(client, "support_line")
        await gone.start()
        await gone.status("completed", 3)  # hung up at the menu
        await sign_in(client)
        flows = await client.get("/console/", params={"days": "1"})
        row = flows.text.split('href="/console/flows/support_line?days=1">', 1)[1]
        row = row.split("</tr>", 1)[0]
        assert "<td>2</td>" in row
        assert "<td>50%</td>" in row  # one voicemail (contained), one hang-up
        assert "main_menu (1)" in row
        page = await client.get("/console/flows/support_line", params={"days": "all"})
        assert page.status_code == 200
        assert 'data-state="welcome" data-reached="2" data-dropped="0"' in page.text
        assert 'data-state="main_menu" data-reached="2" data-dropped="1"' in page.text
        assert 'data-source="main_menu" data-dest="voicemail" data-calls="1"' in page.text
        assert 'data-source="main_menu" data-dest="sales" data-calls="0"' in page.text
        assert "main_menu: 2 reached, 1 hung up (50%)" in page.text
        assert "main_menu -&gt; voicemail (3, 'message'): 1 time(s)" in page.text
        assert page.text.count('class="node state"') == len(SupportLine.states())
        assert "<svg" in page.text
        assert " style=" not in page.text.split("<svg", 1)[1]
        svg = await client.get("/console/flows/support_line/traffic.svg")
        assert svg.headers["content-type"].startswith("image/svg+xml")
        assert (await client.get("/console/flows/nope", headers=HTML)).status_code == 404


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz (dot) is not installed")
async def test_traffic_map_by_graphviz_when_dot_is_installed(console):
    async with console() as (app, client):
        assert app.state.console.graphviz is None  # chosen by whether dot is on PATH
        call = phone(client, "support_line")
        await call.start()
        await call.press("3")
        await sign_in(client)
        page = await client.get("/console/flows/support_line", params={"days": "all"})
        svg = page.text.split("<svg", 1)[1].split("</svg>", 1)[0]
        assert 'class="traffic"' in svg
        assert "<?xml" not in page.text
        assert "main_menu: 1 reached" in svg
        assert "main_menu &#45;&gt; voicemail: 1 time(s)" in svg
        assert " style=" not in svg  # nothing the CSP would block
        assert svg.count('class="node"') == len(SupportLine.states())
        assert "5550111" not in svg  # what sales dials, masked like any number
        assert "+1500*****11" in svg
        image = await client.get("/console/flows/support_line/traffic.svg")
        assert image.text.startswith("<svg")
