"""Who may use the console: the signed session cookie, CSRF tokens and login throttling.

The cookie is our own HMAC-SHA256 over a small JSON payload (no new dependency): it says
whether the browser signed in, when, and its CSRF token. Its key is derived from the
console's token or password hash (so every worker process agrees and changing the secret
signs everyone out), or ``IVRKIT_CONSOLE_SECRET`` when set.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

COOKIE_NAME = "ivrkit_console"
SESSION_SECONDS = 8 * 3600


@dataclass
class ConsoleSession:
    """What the cookie carries."""

    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    signed_in: bool = False
    issued: float = field(default_factory=time.time)


class SessionSigner:
    """Signs and reads the session cookie; a bad, forged or expired cookie reads as None."""

    def __init__(self, key: bytes, *, max_age: int = SESSION_SECONDS) -> None:
        self.key = key
        self.max_age = max_age

    def dumps(self, session: ConsoleSession) -> str:
        payload = json.dumps(
            {"c": session.csrf, "s": session.signed_in, "t": int(session.issued)},
            separators=(",", ":"),
        ).encode()
        body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        return f"{body}.{self._mac(body)}"

    def loads(self, cookie: str | None, *, now: float | None = None) -> ConsoleSession | None:
        if not cookie or "." not in cookie or len(cookie) > 1024:
            return None
        body, _, mac = cookie.partition(".")
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        try:
            data: Any = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            session = ConsoleSession(csrf=str(data["c"]), signed_in=data["s"] is True,
                                     issued=float(data["t"]))
        except (ValueError, KeyError, TypeError):
            return None
        if (now or time.time()) - session.issued > self.max_age:
            return None
        return session

    def _mac(self, body: str) -> str:
        digest = hmac.new(self.key, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def derive_key(secret: str | None) -> bytes:
    """The cookie key: from the configured secret, or random for this process (dev only)."""
    if not secret:
        return secrets.token_bytes(32)
    return hmac.new(secret.encode(), b"ivrkit console session", hashlib.sha256).digest()


def same_token(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class LoginThrottle:
    """At most ``attempts`` failed sign-ins per client address per ``window`` seconds.

    Bounded: the oldest addresses are forgotten first, so a flood of addresses cannot grow
    memory; a success clears the address.
    """

    def __init__(self, *, attempts: int = 5, window: float = 300.0, size: int = 4096) -> None:
        self.attempts = attempts
        self.window = window
        self.size = size
        self._failures: OrderedDict[str, list[float]] = OrderedDict()

    def retry_after(self, who: str, *, now: float | None = None) -> int:
        """Seconds until ``who`` may try again (0: now)."""
        now = time.monotonic() if now is None else now
        recent = [t for t in self._failures.get(who, []) if now - t < self.window]
        if recent:
            self._failures[who] = recent
        else:
            self._failures.pop(who, None)
        if len(recent) < self.attempts:
            return 0
        return max(1, int(self.window - (now - recent[0])) + 1)

    def failed(self, who: str, *, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._failures.setdefault(who, []).append(now)
        self._failures.move_to_end(who)
        while len(self._failures) > self.size:
            self._failures.popitem(last=False)

    def succeeded(self, who: str) -> None:
        self._failures.pop(who, None)
