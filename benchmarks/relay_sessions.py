"""ConversationRelay sessions: sessions/s and per-message latency with 50 at once.

Real ASGI WebSockets: the app runs under uvicorn on a free port in this process and each
session is a `websockets` client speaking Twilio's side. The agent is support_line's
KeywordAgent: each session asks a billing question, gives an account number and is handed
off. The calls are walked to the assistant over HTTP first and handed back afterwards (not
timed); only the sessions are. Every answer, hand-off and billing menu is checked before any
figure is reported.

    python benchmarks/relay_sessions.py --sessions 200 --concurrency 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("IVRKIT_SECRET_KEY", "benchmark-only-key-never-used-in-production")

from flows.support_line import SupportLine  # noqa: E402
from ivrkit import Settings, create_app  # noqa: E402
from tests.conftest import OPEN_HOURS  # noqa: E402
from tests.driver import TOKEN, PhoneCall  # noqa: E402
from tests.relay_support import TwilioSide, relay_of, twilio_side, uvicorn_serving  # noqa: E402

EXPECTED = ["I can help with your bill.", "What is your eight digit account number?"]


async def at_agent(client: httpx.AsyncClient, base: str) -> tuple[PhoneCall, str, str]:
    """A call walked to the assistant over HTTP (not timed): (call, relay url, action)."""
    call = PhoneCall(client=client, flow="support_line")
    await call.post(f"{base}/voice/support_line")
    url, action, _ = relay_of((await call.speak("I have a question")).body)
    return call, url, action


async def one_session(call: PhoneCall, url: str, latencies: list[float]) -> TwilioSide:
    """One ConversationRelay session, checked: question, account number, hand-off."""
    async with twilio_side(url, call.sid) as twilio:
        await twilio.utterance()  # the opening, spoken from start()
        sent = time.perf_counter()
        await twilio.say("I have a question about my bill")
        heard = [await twilio.utterance(), await twilio.utterance()]
        latencies.append(time.perf_counter() - sent)
        if heard != EXPECTED:
            raise AssertionError(f"agent said {heard!r}, expected {EXPECTED!r}")
        sent = time.perf_counter()
        await twilio.say("4 0 7 1 8 2 6 3")
        handoff = await twilio.until_end()
        latencies.append(time.perf_counter() - sent)
    if json.loads(handoff) != {"handoff": "billing", "account": "ivrkit:kept"}:
        raise AssertionError(f"hand-off {handoff!r}")
    return twilio


async def handed_back(call: PhoneCall, action: str, twilio: TwilioSide) -> None:
    """The <Connect action> after the session (not timed): the billing menu, account kept."""
    menu = await call.post(action, **twilio.action_params())
    if not menu.said() or not menu.said()[0].startswith("Billing."):
        raise AssertionError(f"after the hand-off: {menu.body}")


async def run(sessions: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp}/bench.db", auth_token=TOKEN)
        app = create_app([SupportLine], settings=settings, clock=lambda: OPEN_HOURS)
        async with uvicorn_serving(app) as base, httpx.AsyncClient() as client:
            warm = await at_agent(client, base)
            await handed_back(warm[0], warm[2], await one_session(warm[0], warm[1], []))
            calls = [await at_agent(client, base) for _ in range(sessions)]
            latencies: list[float] = []
            gate = asyncio.Semaphore(concurrency)

            async def limited(call: PhoneCall, url: str) -> TwilioSide:
                async with gate:
                    return await one_session(call, url, latencies)

            started = time.perf_counter()
            sides = await asyncio.gather(*(limited(call, url) for call, url, _ in calls))
            elapsed = time.perf_counter() - started
            for (call, _, action), twilio in zip(calls, sides, strict=True):
                await handed_back(call, action, twilio)
        if app.ivr.relay.active or app.ivr.relay.tasks:
            raise AssertionError("sessions were left open")
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(f"{sessions} sessions, {concurrency} at once, every answer and hand-off checked")
    print(f"sessions/s (WebSocket upgrade to end, 2 caller turns each): {sessions / elapsed:.1f}")
    print(
        f"per-message latency (prompt -> agent's last token): "
        f"p50 {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(run(args.sessions, args.concurrency))


if __name__ == "__main__":
    main()
