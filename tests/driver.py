"""A minimal Twilio stand-in for ivrkit's own tests: signed webhooks, TwiML parsed as XML.

It follows only the callback URLs ivrkit emits, so a test can assert the exact documents;
the simulator package (tests/simulator) covers Twilio's semantics for any app.
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import httpx
from twilio.request_validator import RequestValidator

TOKEN = "test-auth-token-0123456789abcdef"
BASE = "http://testserver"


def signed_headers(url: str, params: dict[str, str], token: str = TOKEN) -> dict[str, str]:
    signature = RequestValidator(token).compute_signature(url, params)
    return {"X-Twilio-Signature": signature}


@dataclass
class Answer:
    status: int
    body: str
    content_type: str
    root: ET.Element | None = None

    @property
    def verbs(self) -> list[str]:
        return [child.tag for child in self.root] if self.root is not None else []

    def said(self) -> list[str]:
        return [el.text or "" for el in self.root.iter("Say")] if self.root is not None else []

    def find(self, tag: str) -> ET.Element:
        assert self.root is not None, self.body
        element = self.root.find(f".//{tag}")
        assert element is not None, f"no <{tag}> in {self.body}"
        return element


@dataclass
class PhoneCall:
    """One call driven through ivrkit's callbacks."""

    client: httpx.AsyncClient
    flow: str
    sid: str = field(default_factory=lambda: "CA" + secrets.token_hex(16))
    from_number: str = "+14155550100"
    to_number: str = "+15005550006"
    token: str = TOKEN
    last: Answer | None = None
    history: list[Answer] = field(default_factory=list)

    def params(self, **extra: str) -> dict[str, str]:
        base = {
            "CallSid": self.sid,
            "AccountSid": "AC" + "0" * 32,
            "From": self.from_number,
            "To": self.to_number,
            "Caller": self.from_number,
            "Called": self.to_number,
            "CallStatus": "in-progress" if self.history else "ringing",
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        }
        base.update(extra)
        return base

    async def post(self, url: str, **extra: str) -> Answer:
        params = self.params(**extra)
        response = await self.client.post(
            url, data=params, headers=signed_headers(url, params, self.token)
        )
        answer = Answer(
            response.status_code, response.text, response.headers.get("content-type", "")
        )
        if response.status_code == 200 and response.text.strip():
            answer.root = ET.fromstring(response.text)
        self.last = answer
        self.history.append(answer)
        return answer

    async def start(self) -> Answer:
        return await self.post(f"{BASE}/voice/{self.flow}")

    def _action(self, tag: str) -> str:
        assert self.last is not None
        return self.last.find(tag).attrib["action"]

    async def press(self, digits: str) -> Answer:
        return await self.post(self._action("Gather"), Digits=digits)

    async def speak(self, text: str) -> Answer:
        return await self.post(self._action("Gather"), SpeechResult=text, Confidence="0.9")

    async def silence(self) -> Answer:
        """The Gather timed out: Twilio runs the Redirect that follows it."""
        assert self.last is not None
        return await self.post(self.last.find("Redirect").text or "")

    async def dial_result(self, status: str, duration: int = 0) -> Answer:
        return await self.post(
            self._action("Dial"),
            DialCallStatus=status,
            DialCallSid="CA" + "1" * 32,
            DialCallDuration=str(duration),
        )

    async def recorded(self, seconds: int) -> Answer:
        return await self.post(
            self._action("Record"),
            RecordingUrl=f"https://api.twilio.com/rec/RE{seconds}",
            RecordingDuration=str(seconds),
            RecordingSid="RE" + "2" * 32,
            Digits="#",
        )

    async def queue_result(self, result: str) -> Answer:
        return await self.post(self._action("Enqueue"), QueueResult=result, QueueTime="30")

    async def status(self, status: str = "completed", duration: int = 42) -> Answer:
        return await self.post(
            f"{BASE}/voice/{self.flow}/status", CallStatus=status, CallDuration=str(duration)
        )
