"""What a campaign needs from the outside world: place one call, read how one call ended.

The campaign runner talks to Twilio only through :class:`Dialer`, so its claims, retries,
rate and crash recovery are the same whatever places the calls (``TwilioDialer`` over
``ivrkit.outbound.place_call`` in production and the end-to-end tests).

Errors of a Calls API request are sorted by what the campaign must do next::

    DialError                 the request failed; no call was created
    ├── InvalidNumber         this contact can never be called: a final "failed" outcome
    ├── AuthFailed            no contact can be called: the whole campaign stops
    ├── Unreachable           the request was never sent: the campaign stops, nobody lost
    ├── RateLimited           Twilio said 429: back off, the contact waits for its turn
    └── DialRefused           any other answered error (5xx, 4xx): a failed attempt
    DialUnknown               sent, never answered: the call may exist (never placed again)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class CallRequest:
    """One call a campaign wants placed."""

    flow: str
    to: str
    from_: str
    data: dict[str, Any] = field(default_factory=dict)
    machine_detection: str | None = None


@dataclass(frozen=True, slots=True)
class DialOutcome:
    """How a call ended: Twilio's final CallStatus, AnsweredBy, and what the flow stored."""

    status: str
    """completed, busy, no-answer, failed or canceled."""
    answered_by: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    """The call's ``call.data`` when it ended (the flow's result lives there)."""
    state: str | None = None
    """The flow state the call ended in, when known."""


class DialError(Exception):
    """The Calls API answered with an error: no call was created."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class InvalidNumber(DialError):
    """This contact can never be called: Twilio 21211, or data the store cannot keep."""


class AuthFailed(DialError):
    """The credentials (20003) or the From number (21210, 21212) were refused: nothing
    can be placed until the operator fixes them."""


class Unreachable(DialError):
    """The Calls API could not be reached (connection refused, DNS): nothing was sent."""


class RateLimited(DialError):
    """Twilio answered 429: too many requests for the account."""


class DialRefused(DialError):
    """Any other error Twilio answered with (a 5xx, an unexpected 4xx)."""


class DialUnknown(Exception):
    """The request got no answer (timeout, connection lost after sending): a call may exist."""


class Dialer(Protocol):
    """Places calls and reads their outcomes; the campaign's only view of Twilio."""

    async def place(self, request: CallRequest) -> str:
        """Create the call; return its CallSid. Raises DialError or DialUnknown."""
        ...

    async def outcome(self, call_sid: str) -> DialOutcome | None:
        """The call's outcome once it has ended; None while it is still going on."""
        ...
