"""Complete calls per second through the ``phone`` fixture's machinery, in-process.

What a flow author's test suite does over and over: place a call to ``support_line`` on a real
SQLite file (incoming call, press 3, leave a 7-second message ended with #, the flow thanks the
caller and hangs up), with signed webhooks, one call after another. Every call's answers are
checked (what was said, the states visited, how it ended) before a rate is reported, so a
faster run that answers wrongly fails instead of counting.

    python benchmarks/inprocess_calls.py [--calls 2000] [--rounds 3] [--profile]

The figure depends on the machine and on what else runs on it: compare runs made back to back.
Calls per CPU-second of this process (everything runs in it, the SQLite writes included) says
what the calls cost when other processes compete for the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flows.support_line import SupportLine  # noqa: E402
from ivrkit import Settings, create_app  # noqa: E402
from simulator import Phone  # noqa: E402

TOKEN = "benchmark-token-0123456789abcdef"
EXPECTED_SAID = [
    "Thanks for calling Acme.",
    "For sales press 1. For support press 2. To leave a message press 3. "
    "For an operator press 0. To hear this again press star.",
    "Please leave a message after the beep. Press pound when you are done.",
    "Thank you, we will call you back.",
]
EXPECTED_STATES = ["main_menu", "voicemail"]


async def one_call(phone: Phone) -> None:
    call = await phone.call("/voice/support_line").start()
    await call.press("3")
    await call.record(7, key="#")
    problems = []
    if call.said != EXPECTED_SAID:
        problems.append(f"said {call.said}")
    if call.states != EXPECTED_STATES:
        problems.append(f"states {call.states}")
    if call.result is None or (call.result.status, call.result.reason) != ("completed", "hangup"):
        problems.append(f"ended {call.status} ({call.result and call.result.reason})")
    if call.errors:
        problems.append(f"errors {call.errors}")
    if problems:
        raise SystemExit("wrong answers, no rate reported:\n  " + "\n  ".join(problems)
                         + "\n" + call.transcript)


async def measure(
    calls: int, folder: Path, profile: cProfile.Profile | None
) -> tuple[float, float]:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{folder / 'calls.db'}", auth_token=TOKEN)
    app = create_app([SupportLine], settings=settings)
    phone = Phone(app=app, auth_token=TOKEN)
    try:
        for _ in range(20):  # warm-up: imports, caches, the lifespan's start-up
            await one_call(phone)
        if profile is not None:
            profile.enable()
        started, cpu_started = time.perf_counter(), time.process_time()
        for _ in range(calls):
            await one_call(phone)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        if profile is not None:
            profile.disable()
    finally:
        await phone.aclose()
    return calls / elapsed, calls / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile one round, top 30")
    args = parser.parse_args()
    rates, cpu_rates = [], []
    for round_number in range(args.rounds):
        profile = cProfile.Profile() if args.profile and round_number == 0 else None
        with tempfile.TemporaryDirectory() as folder:
            rate, cpu_rate = asyncio.run(measure(args.calls, Path(folder), profile))
        rates.append(rate)
        cpu_rates.append(cpu_rate)
        print(f"round {round_number + 1}: {args.calls} calls checked, {rate:,.0f} calls/s "
              f"({cpu_rate:,.0f} per CPU-second of this process)", flush=True)
        if profile is not None:
            pstats.Stats(profile).sort_stats("cumulative").print_stats(30)
    print(f"median of {len(rates)}: {statistics.median(rates):,.0f} complete calls/s "
          f"(min {min(rates):,.0f}, max {max(rates):,.0f}); "
          f"{statistics.median(cpu_rates):,.0f} per CPU-second of this process")


if __name__ == "__main__":
    main()
