"""Signed, mutated webhooks against the real app on both backends (issue 10, fuzz test).

Hypothesis (seeded: ``derandomize=True``) builds requests to every webhook endpoint from
Twilio-shaped ones: fields replaced by Unicode digits, NUL and control characters, huge
numbers, random text; fields dropped or sent twice; random CallSids, states, steps and
flow names. Every request is signed, so each one reaches past the signature check.
Whatever arrives: no 5xx, every 200 is TwiML (``<Response>`` root), no traceback logged.

The app runs on an event loop in a thread of its own for the whole test, so Hypothesis
(which drives plain functions) sends each example through the same running app.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.support_line import SupportLine
from ivrkit import Settings, create_app
from ivrkit.security import SignatureChecker
from tests.conftest import OPEN_HOURS, reset_database
from tests.driver import BASE, TOKEN

T = TypeVar("T")
EXAMPLES = 300
SIGNER = SignatureChecker(TOKEN)
LIVE_CALLS = 4


class AppInThread:
    """The app's lifespan and an HTTP client on an event loop running in another thread."""

    def __init__(self, database_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.database_url = database_url
        self.live: list[str] = []

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout=60)

    async def open(self) -> None:
        await reset_database(self.database_url)
        config = Settings(database_url=self.database_url, auth_token=TOKEN)
        self.app = create_app([SupportLine], settings=config, clock=lambda: OPEN_HOURS)
        self.lifespan = self.app.router.lifespan_context(self.app)
        await self.lifespan.__aenter__()
        transport = httpx.ASGITransport(app=self.app)
        self.client = httpx.AsyncClient(transport=transport, base_url=BASE)

    async def close(self) -> None:
        await self.client.aclose()
        await self.lifespan.__aexit__(None, None, None)

    async def post(self, url: str, pairs: list[tuple[str, str]]) -> httpx.Response:
        headers = {
            "X-Twilio-Signature": SIGNER.compute(url, pairs),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        return await self.client.post(url, content=urlencode(pairs), headers=headers)


@pytest.fixture
def running(database_url: str) -> Iterator[AppInThread]:
    app = AppInThread(database_url)
    app.run(app.open())
    try:
        for n in range(LIVE_CALLS):  # calls in progress for the fuzz to hit
            sid = f"CA{n:032x}"
            url = f"{BASE}/voice/support_line"
            answer = app.run(app.post(url, twilio_fields(sid)))
            assert answer.status_code == 200
            app.live.append(sid)
        yield app
    finally:
        app.run(app.close())
        app.loop.call_soon_threadsafe(app.loop.stop)
        app.thread.join(timeout=10)
        app.loop.close()


def twilio_fields(sid: str) -> list[tuple[str, str]]:
    return [
        ("CallSid", sid),
        ("AccountSid", "AC" + "0" * 32),
        ("From", "+14155550100"),
        ("To", "+15005550006"),
        ("CallStatus", "in-progress"),
        ("Direction", "inbound"),
        ("ApiVersion", "2010-04-01"),
    ]


# Values that once broke a webhook: other scripts' digits, NUL and controls, huge numbers.
odd_text = st.one_of(
    st.sampled_from(
        ["²", "١٢", "１２", "1.5", "-1", "abc", "", " 1", "1\x00", "\x00", "9" * 4301, "\u202e1"]
    ),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=8),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
)
hex_sid = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)
field_names = st.sampled_from(
    [
        "CallSid",
        "AccountSid",
        "CallStatus",
        "CallDuration",
        "Duration",
        "Digits",
        "SpeechResult",
        "Confidence",
        "DialCallStatus",
        "DialCallSid",
        "DialCallDuration",
        "RecordingUrl",
        "RecordingSid",
        "RecordingDuration",
        "RecordingStatus",
        "QueueResult",
        "QueueTime",
        "From",
        "To",
        "SequenceNumber",
    ]
)
states = st.one_of(
    st.sampled_from(list(SupportLine.states())), st.text(max_size=30), st.just("x" * 300)
)
steps = st.one_of(st.integers(min_value=0, max_value=4).map(str), odd_text)
steps = st.one_of(st.integers(min_value=0, max_value=4).map(str), steps)


@st.composite
def webhooks(draw: st.DrawFn, live: list[str]) -> tuple[str, list[tuple[str, str]]]:
    """A signed-to-be webhook: its URL and its form pairs."""
    endpoint = draw(st.sampled_from(["", "/action", "/status", "/recording", "/hold"]))
    # Mostly Twilio-shaped, so the calls move on too; one part in a few is mutated.
    flow = "support_line" if draw(st.integers(0, 9)) else draw(st.text(min_size=1, max_size=12))
    query: list[tuple[str, str]] = []
    if endpoint in ("/action", "/recording", "/hold"):
        if draw(st.integers(0, 4)):
            query.append(("state", draw(states)))
        if endpoint == "/action" and draw(st.integers(0, 9)):
            query.append(("step", draw(steps)))
        if endpoint == "/action" and draw(st.booleans()):
            query.append(("input", "none"))
    url = f"{BASE}/voice/{quote(flow, safe='')}{endpoint}"
    if query:
        url += "?" + urlencode(query)
    kind = draw(st.integers(0, 9))
    if kind < 6:
        sid = draw(st.sampled_from(live))
    elif kind < 8:
        sid = "CA" + draw(hex_sid)
    else:
        sid = draw(st.one_of(odd_text, st.just("CA" + "a" * 99)))
    pairs = twilio_fields(sid)
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 3]))):
        name, value = draw(field_names), draw(odd_text)
        how = draw(st.sampled_from(["replace", "add", "drop"]))
        if how == "drop":
            pairs = [p for p in pairs if p[0] != name]
        elif how == "add":
            pairs.append((name, value))  # a second one if the name is there already
        else:
            pairs = [p for p in pairs if p[0] != name] + [(name, value)]
    if draw(st.integers(0, 9)) == 0:
        pairs.append((draw(st.text(min_size=1, max_size=10)), draw(odd_text)))
    return url, pairs


def test_fuzzed_signed_webhooks_never_break_the_app(running, caplog, database_url):
    counts: Counter[str] = Counter()

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(webhooks(running.live))
    def one_request(request: tuple[str, list[tuple[str, str]]]) -> None:
        url, pairs = request
        response = running.run(running.post(url, pairs))
        counts["requests"] += 1
        counts[str(response.status_code)] += 1
        assert response.status_code < 500, (url, pairs, response.text)
        assert response.status_code != 403, (url, pairs)  # every example is signed
        if response.status_code == 200 and response.content:
            assert response.headers["content-type"].startswith("text/xml")
            assert ET.fromstring(response.content).tag == "Response", response.text

    with caplog.at_level(logging.INFO):
        one_request()
    tracebacks = [r for r in caplog.records if r.exc_info]
    counts["5xx"] = sum(n for code, n in counts.items() if code.startswith("5"))
    counts["tracebacks"] = len(tracebacks)
    print(f"fuzz on {database_url.split(':')[0]}: {dict(sorted(counts.items()))}")
    assert counts["requests"] >= EXAMPLES
    assert counts["5xx"] == 0
    assert tracebacks == [], [r.getMessage() for r in tracebacks]
    assert counts["400"] > counts["requests"] // 4  # the mutations do reach the checks
    assert counts["200"] + counts["204"] > counts["requests"] // 10  # and so do calls
