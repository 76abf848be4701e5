"""When the console is on, and whether it asks for a sign-in."""

from __future__ import annotations

from dataclasses import dataclass

from ivrkit.config import Settings
from ivrkit.console.passwords import check_hash_format


@dataclass(frozen=True)
class ConsoleConfig:
    """The console is off unless a token or password hash is set, or ``insecure_dev``.

    Whenever a token or hash is set, every page needs a sign-in, insecure-dev or not;
    insecure-dev alone opens it without one (a laptop running ``make run``).
    """

    token: str | None = None
    password_hash: str | None = None
    insecure_dev: bool = False
    max_live_calls: int = 10
    idle_seconds: float = 300.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ConsoleConfig:
        if settings.console_password_hash:
            check_hash_format(settings.console_password_hash)
        return cls(
            token=settings.console_token,
            password_hash=settings.console_password_hash,
            insecure_dev=settings.insecure_dev,
        )

    @property
    def sign_in_required(self) -> bool:
        return bool(self.token or self.password_hash)

    @property
    def enabled(self) -> bool:
        return self.sign_in_required or self.insecure_dev

    @property
    def secret(self) -> str | None:
        """What the session key derives from (None: a random key for this process)."""
        return self.token or self.password_hash
