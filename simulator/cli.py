"""``ivrkit-sim``: call a TwiML app from the terminal, run scenario files, replay, load.

Exit status: 0 when everything passed (the call ended without a Twilio-side error, every scenario
passed, the replay matched), 1 otherwise, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from simulator.caller import (
    AgentPrompt,
    Answer,
    DialOutcome,
    GatherPrompt,
    HangUp,
    InteractiveCaller,
    Interrupt,
    Press,
    QueueOutcome,
    RecordOutcome,
    ScriptedCaller,
    Speak,
    Timeout,
)
from simulator.model import CallParams, Event, describe
from simulator.relay import RelayOptions

__all__ = ["build_parser", "main"]


def _press(value: str) -> Answer:
    return Timeout() if value.lower() == "timeout" else Press(value)


def _speak(value: str) -> Answer:
    return Speak(value)


def _interrupt(value: str) -> Answer:
    """``TEXT`` (cut the agent off after 2 words, then say TEXT), ``N:TEXT`` (after N words),
    or ``N:`` (cut it off and say nothing)."""
    words, colon, text = value.partition(":")
    if colon and words.isdigit():
        return Interrupt(text, after_words=int(words))
    return Interrupt(value)


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: give seconds, e.g. 5 or 0.5") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{value!r}: must be more than 0 seconds")
    return seconds


def _dial(value: str) -> Answer:
    """``busy``, ``completed:45`` (45 s bridged), ``completed:45:star`` (then the caller
    presses *, which drops the callee where the Dial has hangupOnStar)."""
    status, _, rest = value.partition(":")
    seconds, _, star = rest.partition(":")
    if star not in ("", "star") or (seconds and not seconds.isdigit()):
        raise argparse.ArgumentTypeError(f"{value!r}: use STATUS, STATUS:SECONDS or "
                                         "STATUS:SECONDS:star")
    return DialOutcome(status, int(seconds) if seconds else 30, presses_star=star == "star")


def _record(value: str) -> Answer:
    """``7`` (7 s then silence), ``7#`` (then press #), ``7h`` (then hang up)."""
    digits = "".join(ch for ch in value if ch.isdigit())
    rest = value[len(digits):]
    if not digits or value[: len(digits)] != digits or len(rest) > 1:
        raise argparse.ArgumentTypeError(f"{value!r}: use SECONDS, SECONDS + key (7#) or 7h")
    if rest == "h":
        return RecordOutcome(int(digits), hangup=True)
    return RecordOutcome(int(digits), key=rest or None)


def _queue(value: str) -> Answer:
    result, _, rounds = value.partition(":")
    return QueueOutcome(result, wait_rounds=int(rounds) if rounds else 1)


def _share(value: str) -> float:
    text = value.strip().rstrip("%")
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: give a share like 10% or 0.1") from None
    share = number / 100 if value.strip().endswith("%") or number > 1 else number
    if not 0 <= share <= 1:
        raise argparse.ArgumentTypeError(f"{value!r}: must be between 0% and 100%")
    return share


def _token(args: argparse.Namespace, err: TextIO) -> str | None:
    token = args.auth_token or os.environ.get("TWILIO_AUTH_TOKEN") or None
    if token is None:
        err.write("ivrkit-sim: no auth token (--auth-token or TWILIO_AUTH_TOKEN): "
                  "requests are sent without X-Twilio-Signature\n")
    return token


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ivrkit-sim", description="Play Twilio's side of phone calls against a TwiML app."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    call = commands.add_parser(
        "call", help="place one call: interactive in a terminal, or scripted with --press...",
        description="Without --press/--speak/--dial/--record/--queue the call is interactive "
                    "(on a terminal). Each --press/--speak answers the next Gather, in order, or "
                    "takes the caller's next turn in a ConversationRelay session (--speak is a "
                    "prompt, --press dtmf, --interrupt cuts the agent off); "
                    "--dial/--record/--queue answer the next Dial/Record/Enqueue; when the script "
                    "runs out the caller hangs up.",
    )
    call.add_argument("url", help="the Voice URL, e.g. http://127.0.0.1:8000/voice")
    script = call.add_argument_group("scripted caller")
    script.add_argument("--press", dest="gathers", action="append", type=_press, default=[],
                        metavar="KEYS", help="keys for the next Gather (1234#), or 'timeout'")
    script.add_argument("--speak", dest="gathers", action="append", type=_speak,
                        metavar="TEXT", help="speech for the next Gather or agent turn")
    script.add_argument("--interrupt", dest="gathers", action="append", type=_interrupt,
                        metavar="[WORDS:]TEXT",
                        help="at the next agent turn: cut the agent off after WORDS words "
                             "(default 2) of what it said, then say TEXT")
    script.add_argument("--dial", dest="dials", action="append", type=_dial, default=[],
                        metavar="STATUS[:SECONDS]", help="completed, busy, no-answer, failed...")
    script.add_argument("--record", dest="records", action="append", type=_record, default=[],
                        metavar="SECONDS[KEY|h]", help="speak N s, then a key (7#) or hang up (7h)")
    script.add_argument("--queue", dest="queues", action="append", type=_queue, default=[],
                        metavar="RESULT[:ROUNDS]", help="bridged, leave, hangup... (QueueResult)")
    _call_options(call)
    _relay_options(call)
    call.add_argument("--json", action="store_true", help="one JSON object per line per event")
    call.add_argument("-i", "--interactive", action="store_true",
                      help="ask for every input on stdin even when it is not a terminal")

    run = commands.add_parser("run", help="run a YAML scenario file")
    run.add_argument("scenarios", metavar="SCENARIO.yaml")
    run.add_argument("--url", help="call this URL instead of the file's")
    run.add_argument("--auth-token", help="default: $TWILIO_AUTH_TOKEN")

    replay = commands.add_parser(
        "replay", help="replay a recorded call (--json output or ivrkit event log) and diff"
    )
    replay.add_argument("recording", metavar="RECORDING")
    replay.add_argument("url")
    replay.add_argument("--auth-token", help="default: $TWILIO_AUTH_TOKEN")

    load = commands.add_parser("load", help="many scripted callers at once; latency and errors")
    load.add_argument("url")
    load.add_argument("--calls", type=int, default=100)
    load.add_argument("--concurrency", type=int, default=10)
    load.add_argument("--wrong-input", type=_share, default=0.0, metavar="SHARE",
                      help="callers pressing a key the menu does not offer, e.g. 10%%")
    load.add_argument("--no-input", type=_share, default=0.0, metavar="SHARE")
    load.add_argument("--hangup", type=_share, default=0.0, metavar="SHARE")
    load.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                      help="start no new call after this many seconds")
    load.add_argument("--max-requests", type=int, default=50, help="per call (default 50)")
    load.add_argument("--method", default="POST", choices=["POST", "GET"])
    load.add_argument("--seed", type=int, default=None)
    load.add_argument("--auth-token", help="default: $TWILIO_AUTH_TOKEN")
    load.add_argument("--speak", dest="agent_lines", action="append", metavar="TEXT",
                      help="what callers say to a ConversationRelay agent, one per turn "
                           "(repeatable; default: a question, then goodbye)")
    _relay_options(load)
    load.add_argument("--json", action="store_true")
    return parser


def _relay_options(parser: argparse.ArgumentParser) -> None:
    relay = parser.add_argument_group("ConversationRelay agents")
    defaults = RelayOptions()
    relay.add_argument("--agent-silence", type=_seconds, default=defaults.agent_silence,
                       metavar="SECONDS",
                       help="after the caller spoke, how long the agent may stay silent before "
                            f"the caller hangs up (default {defaults.agent_silence:g})")
    relay.add_argument("--agent-settle", type=_seconds, default=defaults.settle,
                       metavar="SECONDS",
                       help="after an utterance ends, how long to wait for more before the "
                            f"caller's turn (default {defaults.settle:g})")


def _relay(args: argparse.Namespace) -> RelayOptions:
    return RelayOptions(agent_silence=args.agent_silence, settle=args.agent_settle)


def _call_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="from_", default="+15005550006")
    parser.add_argument("--to", default="+15005550001")
    parser.add_argument("--account-sid", default="AC" + "0" * 32)
    parser.add_argument("--method", default="POST", choices=["POST", "GET"])
    parser.add_argument("--auth-token", help="default: $TWILIO_AUTH_TOKEN; none = unsigned")
    parser.add_argument("--status-callback", metavar="URL")
    parser.add_argument("--status-callback-event", dest="status_events", action="append",
                        choices=["initiated", "ringing", "answered", "completed"],
                        help="events sent to --status-callback (repeatable; default completed)")
    parser.add_argument("--fallback-url", metavar="URL")
    parser.add_argument("--max-requests", type=int, default=100,
                        help="end the call after this many requests (loop guard, default 100)")
    parser.add_argument("--start", metavar="ISO8601",
                        help="when the call happens, e.g. 2026-11-22T03:00:00-05:00 (sent as "
                             "X-Ivrkit-Sim-Time; a test or --insecure-dev ivrkit uses it as "
                             "call.now)")


class _ScriptCaller(ScriptedCaller):
    """The command line's script: says on stderr why the caller hangs up at a Gather."""

    def __init__(self, steps: list[Answer], err: TextIO, why: str) -> None:
        super().__init__(steps)
        self._err = err
        self._why = why

    async def gather(self, prompt: GatherPrompt) -> Any:
        answer = await super().gather(prompt)
        if isinstance(answer, HangUp) and self._why:
            why = self._why
            if isinstance(prompt, AgentPrompt):
                why = why.replace("for this Gather", "for the agent's turn")
            self._err.write(f"ivrkit-sim: {why}\n")
            self._err.flush()
            self._why = ""
        return answer


def _why_no_input(steps: list[Answer], args: argparse.Namespace) -> str:
    if any(isinstance(step, Press | Speak | Timeout) for step in steps):
        return "no --press or --speak left for this Gather: the caller hangs up"
    if steps or not sys.stdin.isatty():
        return "no input (stdin is not a terminal): the caller hangs up; use -i or --press"
    return "no input (--json is not interactive): the caller hangs up; use -i or --press"


async def _call(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from simulator.phone import parse_start, run_call

    steps: list[Answer] = [*args.gathers, *args.dials, *args.records, *args.queues]
    interactive = args.interactive or (not steps and sys.stdin.isatty() and not args.json)
    caller: Any = (
        InteractiveCaller(out=out) if interactive
        else _ScriptCaller(steps, err, _why_no_input(steps, args))
    )
    try:
        start_time = parse_start(args.start, "--start") if args.start else None
    except ValueError as error:
        err.write(f"ivrkit-sim: {error}\n")
        return 2
    params = CallParams(from_=args.from_, to=args.to, account_sid=args.account_sid)
    if not args.json:
        # The CallSid is what `ivrkit events CALLSID` (and Twilio's console) look calls up by.
        when = f" at {start_time.isoformat()}" if start_time else ""
        out.write(f"== call {params.call_sid}{when}: {args.method} {args.url}\n")

    def show(event: Event) -> None:
        if args.json:
            out.write(json.dumps(event.to_json()) + "\n")
        else:
            out.write(describe(event) + "\n")
        out.flush()

    result = await run_call(
        args.url, caller, auth_token=_token(args, err), method=args.method,
        params=params, fallback_url=args.fallback_url, status_callback=args.status_callback,
        status_callback_events=args.status_events or ("completed",),
        max_requests=args.max_requests, on_event=show, start_time=start_time,
        relay=_relay(args),
    )
    return 0 if result.ok else 1


async def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from simulator.scenario import ScenarioError, load_scenarios, run_scenarios

    try:
        scenario_file = load_scenarios(args.scenarios)
        token = args.auth_token or scenario_file.options.get("auth_token")
        if not token and not os.environ.get("TWILIO_AUTH_TOKEN"):
            err.write("ivrkit-sim: no auth token: requests are sent unsigned\n")
        report = await run_scenarios(scenario_file, url=args.url, auth_token=token, out=out)
    except (ScenarioError, OSError) as exc:
        err.write(f"ivrkit-sim: {exc}\n")
        return 2
    return 0 if report.ok else 1


async def _replay(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from simulator.replay import load_recording, replay

    try:
        recording = load_recording(args.recording)
    except (ValueError, OSError) as exc:
        err.write(f"ivrkit-sim: {exc}\n")
        return 2
    report = await replay(recording, args.url, auth_token=_token(args, err))
    if report.ok:
        out.write(f"replay matches: {len(report.expected)} steps heard and visited the same\n")
        return 0
    out.write("replay differs (- recorded, + replayed):\n")
    out.write("\n".join(report.diff) + "\n")
    return 1


def _progress_bar(err: TextIO) -> Any:
    if not err.isatty():
        return None

    def draw(done: int, total: int) -> None:
        width = 30
        filled = width * done // max(total, 1)
        err.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} calls")
        if done == total:
            err.write("\n")
        err.flush()

    return draw


async def _load(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from simulator.load import AGENT_LINES, run_load

    try:
        report = await run_load(
            args.url, calls=args.calls, concurrency=args.concurrency,
            wrong_input=args.wrong_input, no_input=args.no_input, hangup=args.hangup,
            auth_token=_token(args, err), method=args.method, max_seconds=args.duration,
            max_requests=args.max_requests, seed=args.seed, progress=_progress_bar(err),
            agent_lines=tuple(args.agent_lines) if args.agent_lines else AGENT_LINES,
            relay=_relay(args),
        )
    except ValueError as exc:
        err.write(f"ivrkit-sim: {exc}\n")
        return 2
    out.write((json.dumps(report.to_json()) if args.json else report.format_text()) + "\n")
    return 0 if report.completed == report.calls and not report.crashed else 1


_COMMANDS = {"call": _call, "run": _run, "replay": _replay, "load": _load}


def main(
    argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    args = build_parser().parse_args(argv)
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        return asyncio.run(_COMMANDS[args.command](args, out, err))
    except KeyboardInterrupt:
        err.write("\nivrkit-sim: interrupted\n")
        return 130
    except BrokenPipeError:  # e.g. `ivrkit-sim call ... --json | head`
        if out is sys.stdout:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
