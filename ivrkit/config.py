"""Settings from environment variables (CLI flags override them), in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from ivrkit.errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///ivrkit.db"


@dataclass(frozen=True)
class Settings:
    """Everything the app needs to know about its environment.

    ``insecure_dev`` turns off X-Twilio-Signature validation: only for a laptop and the
    simulator without a token, never in production (it is logged loudly at start).
    ``trust_simulated_time`` (implied by ``insecure_dev``) lets the simulator's
    ``X-Ivrkit-Sim-Time`` header set ``call.now``: for tests, never in production.
    """

    database_url: str = DEFAULT_DATABASE_URL
    auth_token: str | None = field(default=None, repr=False)
    public_url: str | None = None
    trusted_proxies: frozenset[str] = frozenset()
    insecure_dev: bool = False
    max_body_bytes: int = 64 * 1024
    max_header_bytes: int = 16 * 1024
    """Request line and headers together (``ivrkit serve`` refuses more with a 431)."""
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    db_pool_size: int = 20
    webhook_deadline: float = 5.0
    """Seconds a webhook may take before it is answered with the apology (call webhooks)
    or a 503 (status and recording callbacks); well under Twilio's 15 s."""
    trust_simulated_time: bool = False
    console_token: str | None = field(default=None, repr=False)
    """Sign-in token of the web console at /console (off unless this, a password hash or
    ``insecure_dev`` is set)."""
    console_password_hash: str | None = field(default=None, repr=False)
    metrics: bool = False
    """Prometheus metrics at /metrics (or on ``metrics_port``)."""
    metrics_port: int | None = None
    """Serve /metrics on this port instead of the app's (``ivrkit serve`` only)."""
    log_format: str = "text"
    """text, or json: one JSON object per line."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {
            "database_url": env.get("IVRKIT_DATABASE_URL")
            or env.get("DATABASE_URL")
            or DEFAULT_DATABASE_URL,
            "auth_token": env.get("TWILIO_AUTH_TOKEN") or None,
            "public_url": (env.get("IVRKIT_PUBLIC_URL") or "").rstrip("/") or None,
            "trusted_proxies": frozenset(
                p.strip() for p in env.get("IVRKIT_TRUSTED_PROXIES", "").split(",") if p.strip()
            ),
            "insecure_dev": env.get("IVRKIT_INSECURE_DEV", "").lower() in ("1", "true", "yes"),
            "max_body_bytes": _int(env, "IVRKIT_MAX_BODY_BYTES", 64 * 1024),
            "max_header_bytes": _int(env, "IVRKIT_MAX_HEADER_BYTES", 16 * 1024),
            "host": env.get("IVRKIT_HOST", "127.0.0.1"),
            "port": _int(env, "IVRKIT_PORT", 8000),
            "log_level": env.get("IVRKIT_LOG_LEVEL", "info").lower(),
            "db_pool_size": _int(env, "IVRKIT_DB_POOL_SIZE", 20),
            "webhook_deadline": _seconds(env, "IVRKIT_WEBHOOK_DEADLINE", 5.0),
            "console_token": env.get("IVRKIT_CONSOLE_TOKEN") or None,
            "console_password_hash": env.get("IVRKIT_CONSOLE_PASSWORD_HASH") or None,
            "metrics": _flag(env, "IVRKIT_METRICS"),
            "metrics_port": _int(env, "IVRKIT_METRICS_PORT", 0) or None,
            "log_format": env.get("IVRKIT_LOG_FORMAT", "text").lower() or "text",
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)  # type: ignore[arg-type]
        if not 0 < settings.webhook_deadline <= 14:
            raise ConfigError(
                "IVRKIT_WEBHOOK_DEADLINE must be over 0 and at most 14 seconds "
                f"(Twilio gives up after 15), not {settings.webhook_deadline:g}"
            )
        if settings.log_format not in ("text", "json"):
            raise ConfigError(
                f"IVRKIT_LOG_FORMAT must be text or json, not {settings.log_format!r}"
            )
        if settings.db_pool_size < 1:
            raise ConfigError("IVRKIT_DB_POOL_SIZE must be at least 1")
        if settings.public_url and not settings.public_url.startswith(("http://", "https://")):
            raise ConfigError("IVRKIT_PUBLIC_URL must start with https:// (or http://)")
        return settings

    def require_token(self) -> None:
        """Refuse to serve unsigned traffic unless told so explicitly."""
        if not self.auth_token and not self.insecure_dev:
            raise ConfigError(
                "TWILIO_AUTH_TOKEN is not set, so Twilio's signatures cannot be checked. "
                "Set it (Twilio console > Account > API keys & tokens), or pass --insecure-dev "
                "to run without signature checks on a development machine."
            )


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").lower() in ("1", "true", "yes", "on")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(
            f"{name} must be a number of seconds, such as 5 or 2.5, not {raw!r}"
        ) from None
