"""``ivrkit call FLOW --to +1... --from +1... --data key=value``: place one call.

Every failure is one line on stderr and an exit status, never a traceback: 1 when Twilio
refused the call (invalid number, caller ID, credentials, rate limit), 2 for a mistake in
the command or the settings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from ivrkit.errors import (
    ConfigError,
    FlowDefinitionError,
    IvrkitError,
    PlaceCallError,
)

MACHINE_CHOICES = ("auto", "Enable", "DetectMessageEnd", "off")
WAIT_POLL = 0.5


def add_parser(commands: Any) -> None:
    call = commands.add_parser(
        "call", help="place an outbound call into a flow through Twilio's Calls API"
    )
    call.add_argument("flow", help="the flow's module (path.py, or path.py:ClassName)")
    call.add_argument("--to", required=True, help="the number to call, E.164 (+14155550100)")
    call.add_argument(
        "--from", dest="from_", required=True, help="your Twilio number or verified caller ID"
    )
    call.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="call.data for the flow (repeat it); values are text",
    )
    call.add_argument(
        "--machine-detection",
        choices=MACHINE_CHOICES,
        default="auto",
        help="answering machine detection; auto: DetectMessageEnd when the flow declares "
        "on_machine / on_answered_by, else off",
    )
    call.add_argument(
        "--async-amd",
        action="store_true",
        help="start the flow at once; move the call when Twilio says a machine answered",
    )
    call.add_argument("--ring-timeout", type=int, default=None, help="seconds to let it ring")
    call.add_argument("--time-limit", type=int, default=None, help="longest call, seconds")
    call.add_argument("--database-url", default=None, help="the store the server uses")
    call.add_argument(
        "--public-url", default=None, help="where Twilio reaches the server (IVRKIT_PUBLIC_URL)"
    )
    call.add_argument(
        "--api-url",
        default=None,
        help="base URL of Twilio's REST API (default https://api.twilio.com; the simulator: "
        "http://127.0.0.1:PORT)",
    )
    call.add_argument(
        "--wait",
        action="store_true",
        help="wait for the call to end and print its outcome as JSON",
    )
    call.set_defaults(handler=run)


def parse_data(pairs: list[str]) -> dict[str, str]:
    data: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--data {pair!r}: expected KEY=VALUE, e.g. appointment=Tuesday")
        data[key.strip()] = value
    return data


def run(args: argparse.Namespace) -> int:
    from ivrkit import graph
    from ivrkit.config import Settings

    try:
        flows, _ = graph.load_targets([args.flow])
        if len(flows) > 1:
            names = ", ".join(f"{args.flow}:{flow.__name__}" for flow in flows)
            raise ConfigError(f"{args.flow} holds several flows; name one: {names}")
        data = parse_data(args.data)
        settings = Settings.from_env(database_url=args.database_url, public_url=args.public_url)
    except FlowDefinitionError as error:
        print("ivrkit call: the flow has errors; run ivrkit check:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except IvrkitError as error:
        print(f"ivrkit call: {error}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_call(args, flows[0], data, settings))
    except PlaceCallError as error:
        print(f"ivrkit call: {error}", file=sys.stderr)
        return 1
    except (IvrkitError, ValueError) as error:
        print(f"ivrkit call: {error}", file=sys.stderr)
        return 2


async def _call(args: argparse.Namespace, flow: Any, data: dict[str, str], settings: Any) -> int:
    from ivrkit.outbound.credentials import client_from_env
    from ivrkit.outbound.outcome import call_outcome
    from ivrkit.outbound.place import place_call, placing_store

    client = client_from_env()
    if args.api_url:
        client.api.base_url = args.api_url.rstrip("/")
    store = placing_store(settings.database_url)  # SQLite: beside the server that owns it
    await store.open()
    try:
        sid = await place_call(
            flow,
            to=args.to,
            from_=args.from_,
            data=data,
            machine_detection=None if args.machine_detection == "off" else args.machine_detection,
            async_amd=args.async_amd,
            ring_timeout=args.ring_timeout,
            time_limit=args.time_limit,
            store=store,
            client=client,
            public_url=settings.public_url,
        )
        print(sid, flush=True)
        if not args.wait:
            return 0
        while True:
            outcome = await call_outcome(store, sid)
            if outcome is not None and outcome.final:
                print(
                    json.dumps(
                        {
                            "call_sid": sid,
                            "status": outcome.status,
                            "answered_by": outcome.answered_by,
                            "duration": outcome.duration,
                            "state": outcome.state,
                            "data": outcome.data,
                        },
                        default=str,
                    )
                )
                return 0
            await asyncio.sleep(WAIT_POLL)
    finally:
        await store.close()
