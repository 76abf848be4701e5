"""Exceptions raised by ivrkit.

IvrkitError
├── FlowDefinitionError   a flow is wrong as written; raised when it is loaded
├── FlowLoadError         a flow module cannot be found or imported
├── FlowRuntimeError      a flow's own code misbehaved during a call
├── ConfigError           settings are missing or contradict each other
├── StoreInUseError       the SQLite file is already served by another store
└── PlaceCallError        Twilio's Calls API refused to place an outbound call (or was unreachable)
    ├── InvalidNumberError    the number to call is not a valid phone number (21211)
    ├── CallerIdError         the From number is not one of the account's (21210, 21212)
    ├── TwilioAuthError       the account SID, API key or token is wrong (20003)
    └── RateLimitedError      too many requests; try again later (20429)
"""

from __future__ import annotations

from typing import Any


class IvrkitError(Exception):
    """Base class for every error ivrkit raises on purpose."""


class FlowDefinitionError(IvrkitError):
    """A flow is wrong as written (unknown target, dead end, missing give-up ...).

    Carries every problem found, so an author fixes them in one pass.
    """

    def __init__(self, problems: list[str], findings: list[Any] | None = None) -> None:
        self.problems = list(problems)
        self.findings = list(findings or [])
        super().__init__("\n".join(self.problems))


class FlowLoadError(IvrkitError):
    """A flow module could not be found or imported."""


class FlowRuntimeError(IvrkitError):
    """A flow's own code did something the runtime cannot follow."""


class ConfigError(IvrkitError):
    """Settings are missing or contradict each other."""


class StoreInUseError(IvrkitError):
    """The SQLite file is open in another store: one process owns it, or calls get lost.

    Each store trusts its memory of live calls, so a second one would overwrite the first's
    changes with stale rows."""


class PlaceCallError(IvrkitError):
    """Twilio's Calls API did not place the call; ``code`` is Twilio's error code (or the
    HTTP status, or None when Twilio could not be reached), ``status`` the HTTP status.

    The message is one line a command line can print as it is; it never holds a token."""

    def __init__(self, message: str, *, code: int | None = None, status: int | None = None):
        self.code = code
        self.status = status
        super().__init__(message)


class InvalidNumberError(PlaceCallError):
    """The number to call is not a valid phone number (Twilio error 21211)."""


class CallerIdError(PlaceCallError):
    """The From number is not a number or verified caller ID of the account (21210, 21212)."""


class TwilioAuthError(PlaceCallError):
    """Twilio refused the credentials (20003): the account SID, API key or token is wrong."""


class RateLimitedError(PlaceCallError):
    """Twilio asked to slow down (20429, HTTP 429): try again later, more slowly."""
