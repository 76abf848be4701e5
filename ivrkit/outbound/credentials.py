"""A twilio REST ``Client`` from the environment, without ever logging the secret.

``TWILIO_ACCOUNT_SID`` with ``TWILIO_AUTH_TOKEN``, or an API key: ``TWILIO_API_KEY`` (SK...)
with ``TWILIO_API_SECRET`` (and still the account SID, which the Calls API's URL holds).
An API key is the better choice in production: it can be revoked alone.
``IVRKIT_TWILIO_API_URL`` points the client at another base URL (``ivrkit-sim api``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from ivrkit.errors import ConfigError

API_URL_ENV = "IVRKIT_TWILIO_API_URL"
"""Base URL of Twilio's REST API, for the simulator (``ivrkit-sim api``); default Twilio's."""
API_TIMEOUT = 10.0
_REQUESTS_LOG = logging.getLogger("ivrkit.outbound.twilio_http")
# The library logs every request and response at INFO (URLs with the account SID, headers):
# ivrkit's own line per call says what matters, masked.
_REQUESTS_LOG.setLevel(logging.WARNING)
"""Seconds one Calls API request may take before it fails (the library's default: none)."""


def client_from_env(
    env: Mapping[str, str] | None = None, *, timeout: float = API_TIMEOUT
) -> Client:
    """A twilio ``Client`` for the account in ``env`` (default ``os.environ``).

    Raises :class:`ConfigError` saying which variable is missing; the message never holds
    the token or secret."""
    env = os.environ if env is None else env
    account_sid = env.get("TWILIO_ACCOUNT_SID", "").strip()
    api_key = env.get("TWILIO_API_KEY", "").strip()
    if not account_sid:
        raise ConfigError(
            "TWILIO_ACCOUNT_SID is not set: placing calls needs the account SID (AC...) "
            "and TWILIO_AUTH_TOKEN, or an API key (TWILIO_API_KEY + TWILIO_API_SECRET)"
        )
    if api_key:
        secret = env.get("TWILIO_API_SECRET", "")
        if not secret:
            raise ConfigError("TWILIO_API_KEY is set but TWILIO_API_SECRET is not: set both")
        username, password = api_key, secret
    else:
        token = env.get("TWILIO_AUTH_TOKEN", "")
        if not token:
            raise ConfigError(
                "TWILIO_AUTH_TOKEN is not set: placing calls needs it (or an API key: "
                "TWILIO_API_KEY + TWILIO_API_SECRET)"
            )
        username, password = account_sid, token
    # No edge or region: they would rewrite the API's host (and the simulator's).
    client = Client(
        username,
        password,
        account_sid,
        http_client=TwilioHttpClient(timeout=timeout, logger=_REQUESTS_LOG),
        environment={},
    )
    api_url = env.get(API_URL_ENV, "").strip().rstrip("/")
    if api_url:  # e.g. ivrkit-sim api on a developer's machine or in CI
        if not api_url.startswith(("http://", "https://")):
            raise ConfigError(f"{API_URL_ENV} must start with https:// or http://")
        client.api.base_url = api_url
    return client
