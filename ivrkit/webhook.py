"""Reading a Twilio webhook straight off the ASGI request.

Every call turn pays for this, so it is one look at the headers, the body read under a
size limit, the form decoded with a memo of the fields Twilio repeats, and one HMAC. Any
problem is a :class:`Refused` carrying the 4xx status and the reason to log and answer.
"""

from __future__ import annotations

from urllib.parse import unquote_plus

from starlette.types import Receive, Scope

from ivrkit import outcome
from ivrkit.fields import FieldProblem, check_fields
from ivrkit.memo import BoundedMemo
from ivrkit.security import ProxyTrust, SignatureChecker

FORM_TYPE = "application/x-www-form-urlencoded"


class Refused(Exception):
    """A request we will not serve: answered with ``status`` and ``reason`` as plain text.

    ``detail`` goes to the log only (what the sender must not learn, such as the flows
    this server runs); ``kind`` groups refusals alike for the log throttle (by default
    the reason itself).
    """

    def __init__(self, status: int, reason: str, *, kind: str = "", detail: str = "") -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.kind = kind or reason
        self.detail = detail


class ClientGone(Exception):
    """The peer disconnected before its body arrived: there is no one to answer."""


class Webhook:
    """A verified Twilio request: its params, its query and the base URL callbacks use."""

    __slots__ = ("params", "base_url", "query")

    def __init__(self, params: dict[str, str], base_url: str, query: dict[str, str]) -> None:
        self.params = params
        self.base_url = base_url
        self.query = query

    @property
    def call_sid(self) -> str:
        return self.params["CallSid"]


class FormDecoder:
    """``application/x-www-form-urlencoded`` to pairs, as ``parse_qsl(keep_blank_values=True)``.

    Most fields of a call's webhooks come again verbatim (AccountSid, the numbers, the
    caller's city, the query's state), so fields that need unquoting are decoded once and
    remembered; the memo is bounded and simply emptied when full.
    """

    def __init__(self, size: int = 4096) -> None:
        self._decoded: BoundedMemo[str, tuple[str, str]] = BoundedMemo(size)

    def decode(self, text: str) -> list[tuple[str, str]]:
        pairs = []
        decoded = self._decoded
        for field in text.split("&"):
            if not field:
                continue
            if "%" not in field and "+" not in field:
                name, _, value = field.partition("=")
                pairs.append((name, value))
                continue
            pair = decoded.get(field)
            if pair is None:
                name, _, value = field.partition("=")
                pair = decoded.keep(field, (unquote_plus(name), unquote_plus(value)))
            pairs.append(pair)
        return pairs


class WebhookReader:
    """Turns an ASGI request into a :class:`Webhook`, or refuses it."""

    def __init__(
        self,
        *,
        checker: SignatureChecker | None,
        proxies: ProxyTrust,
        public_url: str | None,
        max_body_bytes: int,
    ) -> None:
        self.checker = checker
        self.proxies = proxies
        self.public_url = public_url.rstrip("/") if public_url else None
        self.max_body_bytes = max_body_bytes
        self.forms = FormDecoder()

    async def read(self, scope: Scope, receive: Receive, *, needs_call_sid: bool = True) -> Webhook:
        headers = dict(scope["headers"])  # the last of a repeated header wins
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        declared = headers.get(b"content-length", b"").decode("latin-1")
        raw_query = scope.get("query_string", b"").decode("latin-1")
        query = dict(self.forms.decode(raw_query)) if raw_query else {}
        if scope["method"] == "POST":
            media_type = content_type.split(";", 1)[0].strip().lower()
            if media_type != FORM_TYPE:
                raise Refused(400, f"expected {FORM_TYPE}, got {media_type or 'no Content-Type'}")
            body = await self._body(receive, declared)
            try:
                text = body.decode("utf-8")
                pairs = self.forms.decode(text)
            except UnicodeDecodeError:
                raise Refused(400, "form body is not UTF-8") from None
        else:
            text = ""
            pairs = list(query.items())
        base_url = self.public_url or self._base_url(scope, headers)
        if self.checker is not None:
            path = scope.get("raw_path") or scope["path"].encode()
            url = base_url + path.decode("latin-1").split("?", 1)[0]
            if raw_query:
                url = f"{url}?{raw_query}"
            signed_pairs = pairs if scope["method"] == "POST" else []
            signature = headers.get(b"x-twilio-signature", b"").decode("latin-1")
            if not self.checker.valid(url, signed_pairs, signature):
                raise Refused(
                    403,
                    f"X-Twilio-Signature missing or wrong for {url} "
                    "(check TWILIO_AUTH_TOKEN and IVRKIT_PUBLIC_URL)",
                    kind="signature",
                )
        params = dict(pairs)
        if needs_call_sid and not params.get("CallSid"):
            raise Refused(400, "CallSid is missing: is this a Twilio voice webhook?")
        try:
            check_fields(pairs, params, query, raw=(text, raw_query))
        except FieldProblem as problem:
            raise Refused(400, problem.reason, kind=problem.kind) from None
        outcome.seen(params, query)  # which call: for the access line and log lines
        return Webhook(params, base_url, query)

    async def _body(self, receive: Receive, declared: str) -> bytes:
        limit = self.max_body_bytes
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise Refused(413, f"body of {declared} bytes is over the {limit} byte limit")
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            body += bytes(message.get("body", b""))
            if len(body) > limit:
                raise Refused(413, f"body is over the {limit} byte limit")
            if not message.get("more_body", False):
                return body

    def _base_url(self, scope: Scope, headers: dict[bytes, bytes]) -> str:
        """scheme://host[:port] as Twilio sees this server (proxies' word only if trusted)."""
        scheme = scope.get("scheme", "http")
        host = headers.get(b"host", b"").decode("latin-1")
        forwarded_proto = headers.get(b"x-forwarded-proto", b"").decode("latin-1")
        forwarded_host = headers.get(b"x-forwarded-host", b"").decode("latin-1")
        if not host:
            server = scope.get("server")
            host = f"{server[0]}:{server[1]}" if server else "localhost"
        if (forwarded_proto or forwarded_host) and self.proxies.trusts(peer(scope)):
            scheme = forwarded_proto.split(",")[0].strip() or scheme
            host = forwarded_host.split(",")[0].strip() or host
        return f"{scheme}://{host}"


def peer(scope: Scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None
