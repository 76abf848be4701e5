"""What the simulated Calls API costs per call, in-process, against a bare Starlette TwiML app.

    python -m benchmarks.sim_api --calls 10000

Creates the calls through twilio-python's real ``Client`` (``twilio_client(api)``, blocking, on
the event loop) with all four status callback events, a mixed callee model (70% people
pressing 1, 10% machines, 10% busy, 10% no answer) and sync AMD on a tenth of the calls, and
reports calls created per second, calls completed per second and the API's own time per
create. The app is as cheap as a TwiML app gets, so the figures are the simulator's ceiling;
a campaign against ivrkit adds the app's and the store's cost on top.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulator import CalleeModel, Press, SimulatedApi
from simulator.twilio_client import twilio_client

DOC = '<?xml version="1.0" encoding="UTF-8"?><Response>{}</Response>'
MENU = DOC.format('<Gather action="/done" numDigits="1"><Say>Press 1 to confirm.</Say></Gather>')
DONE = DOC.format("<Say>Confirmed.</Say>")


async def voice(request: Request) -> Response:
    await request.body()
    return Response(MENU, media_type="text/xml")


async def done(request: Request) -> Response:
    await request.body()
    return Response(DONE, media_type="text/xml")


async def status(request: Request) -> Response:
    await request.body()
    return Response(status_code=204)


APP = Starlette(routes=[Route("/voice", voice, methods=["POST"]),
                        Route("/done", done, methods=["POST"]),
                        Route("/status", status, methods=["POST"])])


async def run(calls: int, batch: int) -> dict[str, float]:
    model = CalleeModel(ratios={"human": 70, "machine": 10, "busy": 10, "no-answer": 10},
                        seed=1, steps=(Press("1"),))
    api = SimulatedApi(account_sid="AC" + "b" * 32, auth_token="bench-token", app=APP,
                       callees=model, record_events=False)
    handled = 0.0
    async with api:
        client = twilio_client(api)
        original = api.handle

        def timed(*args: object) -> object:
            nonlocal handled
            started = time.perf_counter()
            try:
                return original(*args)  # type: ignore[arg-type]
            finally:
                handled += time.perf_counter() - started

        api.handle = timed  # type: ignore[method-assign,assignment]
        started = time.perf_counter()
        for index in range(calls):
            extra = {"machine_detection": "Enable"} if index % 10 == 0 else {}
            client.calls.create(
                to=f"+1555{index:07d}", from_="+15550000000", url="http://testserver/voice",
                status_callback="http://testserver/status",
                status_callback_event=["initiated", "ringing", "answered", "completed"],
                **extra,
            )
            if index % batch == batch - 1:
                await asyncio.sleep(0)  # let the calls run, as a campaign's loop would
        created = time.perf_counter() - started
        await api.wait_idle(timeout=None)
        total = time.perf_counter() - started
        statuses = Counter(call.status for call in api.calls.values())
    print(f"{calls} calls: created {calls / created:.0f}/s, completed {calls / total:.0f}/s "
          f"({total:.2f} s); API time per create {handled / calls * 1e6:.0f} us; "
          f"outcomes {dict(statuses)}")
    return {"created_per_s": calls / created, "completed_per_s": calls / total,
            "api_us_per_create": handled / calls * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=50,
                        help="creates between two yields to the event loop (default 50)")
    args = parser.parse_args()
    asyncio.run(run(args.calls, args.batch))


if __name__ == "__main__":
    main()
