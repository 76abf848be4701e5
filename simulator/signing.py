"""X-Twilio-Signature as Twilio computes it (reference sect. 6).

Written from the spec, not from twilio-python, so the tests can check one against the other.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Signer", "compute_signature", "signing_url"]


_signing_urls: dict[str, str] = {}
_name_orders: dict[tuple[str, ...], list[str]] = {}


def signing_url(url: str) -> str:
    """The URL as Twilio signs it: no fragment, no ``user:pass@``, and no port for HTTPS.

    Remembered per URL: a test suite's calls request the same few dozen URLs over and over.
    """
    signed = _signing_urls.get(url)
    if signed is None:
        if len(_signing_urls) >= 4096:
            _signing_urls.clear()
        signed = _signing_urls[url] = _signing_url(url)
    return signed


def _signing_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = parts.port
    netloc = host if port is None or parts.scheme == "https" else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def _payload(
    url: str, params: Mapping[str, str] | Iterable[tuple[str, str]] | None
) -> bytes:
    if not params:
        return url.encode()
    if isinstance(params, Mapping):
        # Names are unique: sort them (in byte order) once per set of names, which a call's
        # webhooks share.
        names = tuple(params)
        order = _name_orders.get(names)
        if order is None:
            if len(_name_orders) >= 1024:
                _name_orders.clear()
            order = _name_orders[names] = sorted(names, key=str.encode)
        chunks = [url]
        for name in order:
            chunks.append(name)
            chunks.append(params[name])
        return "".join(chunks).encode()
    items = params
    # Names sorted in byte order; repeated names contribute every distinct value, sorted.
    grouped: dict[str, set[str]] = {}
    for name, value in items:
        grouped.setdefault(name, set()).add(value)
    chunks = [url]
    for name in sorted(grouped, key=lambda n: n.encode()):
        for value in sorted(grouped[name]):
            chunks.append(name)
            chunks.append(value)
    return "".join(chunks).encode()


class Signer:
    """Signs requests with one auth token; keeps the keyed HMAC so each signature costs one copy."""

    __slots__ = ("_mac",)

    def __init__(self, auth_token: str) -> None:
        self._mac = hmac.new(auth_token.encode(), digestmod=hashlib.sha1)

    def sign(
        self,
        url: str,
        params: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    ) -> str:
        """Signature for a POST (form ``params``) or GET (``params=None``, query in ``url``)."""
        mac = self._mac.copy()
        mac.update(_payload(signing_url(url), params))
        return base64.b64encode(mac.digest()).decode()


def compute_signature(
    auth_token: str,
    url: str,
    params: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
) -> str:
    """One-off signature; use ``Signer`` when signing many requests with one token."""
    return Signer(auth_token).sign(url, params)
