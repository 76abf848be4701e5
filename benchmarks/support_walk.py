"""The call every benchmark makes: four signed webhooks on flows/support_line.py, in order.

incoming call -> press 3 (voicemail) -> recording done (thanks, hang up) -> status callback
``completed``. This module writes those webhooks as request lines for wrk, remembers which
line belongs to which call, and says what a call handled as intended leaves in the store
(``EXPECTED_EVENTS``, ``FINAL_*``), so that a run can be checked call by call afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode
from xml.etree import ElementTree

from twilio.request_validator import RequestValidator

TOKEN = "bench-token-" + "0" * 20
BENCH_SECRET_KEY = "benchmark-only-secret-key-never-used-in-production"
"""IVRKIT_SECRET_KEY of the servers benchmarks start when none is set: support_line's
assistant keeps the account number it hears encrypted."""
FLOW = "support_line"

STEPS: tuple[tuple[str, dict[str, str]], ...] = (
    (f"/voice/{FLOW}", {}),
    (f"/voice/{FLOW}/action?state=main_menu&step=1", {"Digits": "3"}),
    (
        f"/voice/{FLOW}/action?state=voicemail&step=2",
        {
            "RecordingUrl": "https://api.twilio.com/rec/RE1",
            "RecordingDuration": "12",
            "RecordingSid": "RE" + "1" * 32,
            "Digits": "#",
        },
    ),
    (f"/voice/{FLOW}/status", {"CallStatus": "completed", "CallDuration": "40"}),
)
"""Path and the parameters beyond the common ones, for each webhook of a call."""

EXPECTED_EVENTS: tuple[tuple[str, str], ...] = (
    ("start", "(start)"),
    ("action", "main_menu"),
    ("action", "voicemail"),
    ("status", ""),  # a status callback's event carries the state the call ended in
)
"""(kind, state) of the event each webhook leaves in ivrkit_events, in order."""

FINAL_STATE_PREFIX = "thanks"
FINAL_STATUS = "completed"
FINAL_DURATION = 40
ANSWER_MARKERS: tuple[str, ...] = (
    "state=main_menu&amp;step=1",  # the menu's Gather posts back to its own step
    "<Record ",  # press 3: the voicemail prompt and its Record
    "Thank you, we will call you back.",  # recording done (then it hangs up)
    "",  # status callback: 204, no body
)
"""A piece of the TwiML that only the intended answer to each webhook contains."""


def answer_problem(step: int, status: int, text: str, bare: bool) -> str | None:
    """None if this is the intended answer to the call's webhook number ``step`` (from 0)."""
    if not bare and not ANSWER_MARKERS[step]:
        return None if status == 204 and not text else f"status {status}, wanted 204 and no body"
    if status != 200:
        return f"status {status}"
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as error:
        return f"not XML ({error})"
    if root.tag != "Response" or len(root) == 0:
        return f"not TwiML: {text[:80]!r}"
    if not bare and ANSWER_MARKERS[step] not in text:
        return f"not the intended answer (no {ANSWER_MARKERS[step]!r}): {text[:160]!r}"
    return None


def common_params(call_sid: str) -> dict[str, str]:
    return {
        "CallSid": call_sid,
        "AccountSid": "AC" + "0" * 32,
        "From": "+14155550100",
        "To": "+15005550006",
        "Caller": "+14155550100",
        "Called": "+15005550006",
        "CallStatus": "in-progress",
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
        "FromCity": "SAN FRANCISCO",
        "FromState": "CA",
        "FromCountry": "US",
    }


def step_params(call_sid: str, step: int) -> dict[str, str]:
    return {**common_params(call_sid), **STEPS[step][1]}


def signature(url: str, params: dict[str, str], token: str = TOKEN) -> str:
    """Twilio's X-Twilio-Signature: HMAC-SHA1 of the URL and the sorted name-value pairs.

    Written out because twilio's RequestValidator.compute_signature costs ~250 us a line and
    a run signs hundreds of thousands; ``check_signer`` proves both agree before each run.
    """
    payload = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def check_signer(base: str) -> None:
    """Stop if our signing and twilio's disagree: every webhook would get a 403."""
    sid = "CA" + secrets.token_hex(16)
    url = base + STEPS[1][0]
    params = step_params(sid, 1)
    expected = RequestValidator(TOKEN).compute_signature(url, params)
    fast = LineWriter(base).line(sid, 1)
    if signature(url, params) != expected or fast != request_line(base, sid, 1):
        raise SystemExit(
            "benchmarks/support_walk.py: signature() disagrees with twilio's RequestValidator; "
            "fix signature() before measuring"
        )


def request_line(base: str, call_sid: str, step: int, token: str = TOKEN) -> str:
    """``path<TAB>form body<TAB>signature``: one webhook, as the wrk script reads it."""
    path = STEPS[step][0]
    params = step_params(call_sid, step)
    return f"{path}\t{urlencode(params)}\t{signature(base + path, params, token)}"


class LineWriter:
    """``request_line`` for many calls: only the CallSid changes, so the form body and the
    signed text are split around it once and the HMAC key is set up once (~4 us a line)."""

    def __init__(self, base: str, token: str = TOKEN) -> None:
        marker = "CA" + "f" * 32
        keyed = hmac.new(token.encode(), digestmod=hashlib.sha1)
        self._steps = []
        for step, (path, _) in enumerate(STEPS):
            params = step_params(marker, step)
            body = urlencode(params).split(marker)
            signed = (base + path + "".join(n + params[n] for n in sorted(params))).split(marker)
            self._steps.append((path, body, signed[0].encode(), signed[1].encode()))
        self._keyed = keyed

    def line(self, call_sid: str, step: int) -> str:
        path, body, before, after = self._steps[step]
        mac = self._keyed.copy()
        mac.update(before + call_sid.encode() + after)
        signed = base64.b64encode(mac.digest()).decode()
        return f"{path}\t{body[0]}{call_sid}{body[1]}\t{signed}"


@dataclass
class CallPlan:
    """Which call each request line of each wrk thread belongs to, in sending order.

    A thread's lines come in blocks of ``block`` calls: the first webhook of every call in
    the block, then the second of each, and so on, so a call's next webhook is sent
    ``block`` requests after its previous one (many round trips later) and arrives after
    it has been answered. Whether it did is checked in the store afterwards.
    """

    threads: int
    block: int
    sids: list[str] = field(default_factory=list)
    lines_of: list[list[tuple[int, int]]] = field(default_factory=list)
    """Per thread, in sending order: (call index, webhook index) of each line."""

    @classmethod
    def make(cls, calls: int, threads: int, block: int) -> CallPlan:
        plan = cls(threads=threads, block=block)
        plan.sids = ["CA" + secrets.token_hex(16) for _ in range(calls)]
        plan.lines_of = [[] for _ in range(threads)]
        for thread in range(threads):
            own = range(thread, calls, threads)
            for first in range(0, len(own), block):
                chunk = own[first : first + block]
                for step in range(len(STEPS)):
                    plan.lines_of[thread].extend((call, step) for call in chunk)
        return plan

    def write(self, base: str, stem: Path, token: str = TOKEN) -> None:
        """One file per thread, ``<stem>.<thread>``, as the wrk script loads them."""
        for thread, lines in enumerate(self.lines_of):
            writer = LineWriter(base, token)
            with open(f"{stem}.{thread}", "w") as out:
                out.writelines(writer.line(self.sids[call], step) + "\n" for call, step in lines)

    def sent_steps(self, sent_per_thread: Sequence[int]) -> dict[str, int]:
        """Webhooks handed to wrk per call, given how many lines each thread took."""
        counts = dict.fromkeys(self.sids, 0)
        for lines, sent in zip(self.lines_of, sent_per_thread, strict=True):
            for call, _ in lines[:sent]:
                counts[self.sids[call]] += 1
        return counts

    def last_lines(self, sent_per_thread: Sequence[int], window: int) -> set[tuple[str, int]]:
        """(call, webhook number from 1) of the last ``window`` lines each thread took."""
        return {
            (self.sids[call], step + 1)
            for lines, sent in zip(self.lines_of, sent_per_thread, strict=True)
            for call, step in lines[max(0, sent - window) : sent]
        }
