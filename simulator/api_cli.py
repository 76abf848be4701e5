"""``ivrkit-sim api``: Twilio's Calls API on a local port, with a simulated far end.

    ivrkit-sim api --port 9500 --account-sid AC... --auth-token TOKEN \\
        --ratio human=70,machine=20,busy=5,no-answer=5 --seed 7 \\
        --callee "+15550100001=human,press=1" --callee "+15550100002=busy"

Point twilio-python at it with ``simulator.twilio_client.twilio_client(URL, SID, TOKEN)``.
Each call that ends prints one line (numbers masked); the auth token is never printed.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, TextIO

from simulator.callees import CalleeModel, parse_callee, parse_ratios
from simulator.caller import Answer, Press, Speak, Timeout
from simulator.dialout import SimCall
from simulator.model import ErrorEvent

__all__ = ["add_api_parser", "serve_api"]


def _callee(value: str) -> tuple[str, Any]:
    number, sep, spec = value.partition("=")
    if not sep or not number.strip():
        raise argparse.ArgumentTypeError(f"{value!r}: use NUMBER=SPEC, e.g. +15550100001=busy")
    try:
        return number.strip(), parse_callee(spec)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _ratios(value: str) -> dict[str, float]:
    try:
        return parse_ratios(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _ring(value: str) -> tuple[float, float]:
    low, _, high = value.partition("-")
    try:
        return float(low), float(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: give SECONDS or MIN-MAX, e.g. 2-8") from None


def _step(value: str) -> Answer:
    if value == "timeout":
        return Timeout()
    if value.startswith("speak:"):
        return Speak(value[6:])
    return Press(value)


def add_api_parser(commands: Any) -> None:
    api = commands.add_parser(
        "api", help="serve Twilio's Calls API; created calls are played against their Url",
        description="Serves POST/GET /2010-04-01/Accounts/SID/Calls.json like Twilio (HTTP Basic "
                    "auth, Twilio's error codes) and plays each call against its Url with a "
                    "simulated callee: per number (--callee) or drawn by --ratio with --seed.",
    )
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=9500)
    api.add_argument("--account-sid", default=None, help="default: $TWILIO_ACCOUNT_SID")
    api.add_argument("--auth-token", default=None,
                     help="default: $TWILIO_AUTH_TOKEN; also signs every webhook")
    api.add_argument("--api-key", action="append", default=[], metavar="SK...:SECRET",
                     help="an API key that may authenticate too (repeatable)")
    api.add_argument("--callee", action="append", type=_callee, default=[],
                     metavar="NUMBER=SPEC",
                     help="how NUMBER answers: human[,press=KEYS][,speak=TEXT][,ring=S], "
                          "machine[,greeting=S], fax, unknown, busy, no-answer, failed "
                          "(repeat a number for successive attempts)")
    api.add_argument("--ratio", type=_ratios, default={"human": 1.0},
                     metavar="KIND=W,...", help="other numbers: weights of human, machine, fax, "
                     "unknown, busy, no-answer, failed (default human=1)")
    api.add_argument("--step", dest="steps", action="append", type=_step, default=[],
                     metavar="KEYS|speak:TEXT|timeout",
                     help="what a drawn human does at each Gather, in order (repeatable)")
    api.add_argument("--seed", default="0", help="seed for the --ratio draws (default 0)")
    api.add_argument("--ring", type=_ring, default=(2.0, 8.0), metavar="MIN-MAX",
                     help="ring seconds drawn for --ratio callees (default 2-8)")
    api.add_argument("--cps", type=float, default=1.0,
                     help="calls started per second, like Twilio's account limit (default 1; "
                          "0 = no limit); later calls wait queued")
    api.add_argument("--request-rate", type=float, default=None,
                     help="API requests per second before 429/20429 (default: no limit)")
    api.add_argument("--speed", type=float, default=0.0,
                     help="simulated seconds per real second for ringing and calls "
                          "(default 0: no waiting)")
    api.add_argument("--from-number", action="append", default=None, metavar="E164",
                     help="numbers the account may call from (others get 21210); default any")
    api.add_argument("--quiet", action="store_true", help="no line per ended call")


def _model(args: argparse.Namespace) -> CalleeModel:
    numbers: dict[str, list[Any]] = {}
    for number, callee in args.callee:
        numbers.setdefault(number, []).append(callee)
    return CalleeModel(
        numbers={number: tuple(callees) for number, callees in numbers.items()},
        ratios=args.ratio, seed=args.seed, ring=args.ring, steps=tuple(args.steps),
    )


def _mask(number: str) -> str:
    return number if len(number) <= 4 else "*" * (len(number) - 4) + number[-4:]


async def serve_api(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import uvicorn

    from simulator.api import SimulatedApi

    account_sid = args.account_sid or os.environ.get("TWILIO_ACCOUNT_SID")
    token = args.auth_token or os.environ.get("TWILIO_AUTH_TOKEN")
    if not account_sid or not account_sid.startswith("AC"):
        err.write("ivrkit-sim api: give --account-sid AC... (or TWILIO_ACCOUNT_SID)\n")
        return 2
    if not token:
        err.write("ivrkit-sim api: give --auth-token (or TWILIO_AUTH_TOKEN)\n")
        return 2
    keys: dict[str, str] = {}
    for item in args.api_key:
        sid, sep, secret = item.partition(":")
        if not sep or not sid.startswith("SK") or not secret:
            err.write(f"ivrkit-sim api: --api-key {sid[:6]}...: use SK...:SECRET\n")
            return 2
        keys[sid] = secret
    try:
        model = _model(args)
        api = SimulatedApi(
            account_sid=account_sid, auth_token=token, api_keys=keys, callees=model,
            cps=args.cps or None, request_rate=args.request_rate, speed=args.speed,
            from_numbers=args.from_number,
        )
    except ValueError as error:
        err.write(f"ivrkit-sim api: {error}\n")
        return 2

    def show(call: SimCall) -> None:
        who = f" {call.answered_by}" if call.answered_by else ""
        codes = sorted({str(event.code) for event in call.events if isinstance(event, ErrorEvent)})
        errors = f" (Twilio errors {', '.join(codes)})" if codes else ""
        out.write(f"{call.sid} to {_mask(call.to)}: {call.status}{who} "
                  f"{call.duration or 0}s{errors}\n")
        out.flush()

    if not args.quiet:
        api.listeners.append(show)
    out.write(f"simulated Twilio API for {account_sid[:6]}... on http://{args.host}:{args.port} "
              f"(cps {args.cps or 'unlimited'}, speed {args.speed or 'instant'})\n")
    out.flush()
    config = uvicorn.Config(api.asgi, host=args.host, port=args.port, lifespan="on",
                            log_level="warning", access_log=False, interface="asgi3")
    await uvicorn.Server(config).serve()
    return 0
