"""Getting TwiML the way Twilio does: signed requests, cookies, redirects, timeouts, retries.

One ``Transport`` holds one ``httpx.AsyncClient`` (real HTTP, or an ASGI app in-process) and is
shared by every call; each call gets a ``Session`` with its own cookie jar.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import os
import ssl
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urljoin, urlsplit, urlunsplit

import httpx

from simulator.asgi import AsgiHost, AsgiResponse
from simulator.signing import Signer

__all__ = [
    "Exchange", "Fetch", "Overrides", "Session", "Transport", "encode_form", "split_fragment",
]

USER_AGENT = "TwilioProxy/1.1"
ASGI_BASE_URL = "http://testserver"
MAX_REDIRECTS = 10
_FOLLOWED = {301, 302, 303, 307}


@dataclass(frozen=True)
class Overrides:
    """Connection overrides from a URL fragment (``#ct=1000&rt=5000&rc=2&rp=ct,rt``), in ms."""

    connect_ms: int = 5000
    read_ms: int = 15000
    total_ms: int = 15000
    retries: int = 1
    retry_on: frozenset[str] = frozenset({"ct"})

    @classmethod
    def from_fragment(cls, fragment: str) -> Overrides:
        if not fragment:
            return _DEFAULT_OVERRIDES
        values = dict(parse_qsl(fragment))

        def ms(key: str, default: int, low: int, high: int) -> int:
            try:
                return min(max(int(values[key]), low), high)
            except (KeyError, ValueError):
                return default

        retry_on = cls.retry_on
        if "rp" in values:
            retry_on = frozenset(p.strip() for p in values["rp"].split(",") if p.strip())
        return cls(
            connect_ms=ms("ct", 5000, 100, 10000),
            read_ms=ms("rt", 15000, 100, 15000),
            total_ms=ms("tt", 15000, 100, 15000),
            retries=ms("rc", 1, 0, 5),
            retry_on=retry_on,
        )


_DEFAULT_OVERRIDES = Overrides()


def split_fragment(url: str) -> tuple[str, Overrides]:
    """The URL without its fragment (never sent, never signed) and the overrides it carried."""
    if "#" not in url:
        return url, _DEFAULT_OVERRIDES
    base, _, fragment = url.partition("#")
    return base, Overrides.from_fragment(fragment)


@dataclass
class Exchange:
    """One HTTP request and its answer (a redirect hop or a retry is its own exchange)."""

    method: str
    url: str
    params: dict[str, str]
    status: int | None
    elapsed_ms: float


@dataclass
class Fetch:
    """The outcome of one logical request: the answer, or the Twilio error code it maps to."""

    method: str
    url: str
    status: int | None = None
    content_type: str = ""
    body: bytes = b""
    final_url: str = ""
    error_code: int | None = None
    error_message: str = ""
    exchanges: list[Exchange] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error_code is None


class _Failure(Exception):
    def __init__(self, code: int, message: str, kind: str) -> None:
        super().__init__(message)
        self.code = code
        self.kind = kind  # which retry policy (ct, rt, 4xx, 5xx) covers it


class Transport:
    """Shared HTTP machinery. Give ``app`` for an in-process ASGI app, ``host`` for one whose
    lifespan someone else runs (``Phone``), or ``client`` to reuse an httpx client.

    An in-process app is called directly (``AsgiHost``); with ``lifespan=True`` its lifespan
    starts at ``start()`` (or ``async with``) and shuts down at ``aclose()``. The client is
    closed by ``aclose()`` only when this transport created it.
    """

    def __init__(
        self,
        *,
        app: Any = None,
        client: httpx.AsyncClient | None = None,
        auth_token: str | None = None,
        max_connections: int = 100,
        host: AsgiHost | None = None,
        lifespan: bool = False,
    ) -> None:
        self._owns_host = host is None and app is not None and client is None
        if self._owns_host:
            host = AsgiHost(app, lifespan=lifespan)
        self.host = host
        self.app = host.app if host is not None else app
        self._owns_client = client is None and host is None
        # With our own client, requests go straight to its transport: the client's per-request
        # work (URL merging, its own cookie jar, auth and redirect hooks) is not needed here and
        # costs more CPU than the rest of the simulator.
        self._direct: httpx.AsyncBaseTransport | None = None
        if client is None and host is None:
            limits = httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            )
            skip_missing_sniffio()
            self._direct = httpx.AsyncHTTPTransport(limits=limits, verify=_ssl_context())
            client = httpx.AsyncClient(transport=self._direct)
        self.client = client
        self.signer = Signer(auth_token) if auth_token else None

    def absolute(self, url: str) -> str:
        """Bare paths (``/voice``) go to the in-process app at http://testserver, or to the given
        client's ``base_url``; signatures need the absolute URL."""
        if url.startswith("/"):
            if self.host is not None:
                return ASGI_BASE_URL + url
            if self.client is not None and str(self.client.base_url):
                return str(self.client.base_url.join(url))
        return url

    def session(self) -> Session:
        return Session(self)

    async def start(self) -> None:
        """Run the in-process app's lifespan start-up, if this transport runs it."""
        if self.host is not None:
            await self.host.start()

    async def aclose(self) -> None:
        try:
            if self._owns_host and self.host is not None:
                await self.host.stop()
        finally:
            if self._owns_client and self.client is not None:
                await self.client.aclose()

    async def __aenter__(self) -> Transport:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Session:
    """One call's view of the transport: its own cookie jar, like Twilio's per-call browser."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.cookies = httpx.Cookies()

    async def fetch(
        self,
        method: str,
        url: str,
        params: Mapping[str, str] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> Fetch:
        """Request ``url`` with the call's ``params`` (form body for POST, query for GET) and any
        extra ``headers``.

        Follows 301/302/303/307 (at most 10), retries per the fragment's ``rc``/``rp``, and never
        raises for network trouble: the result carries the Twilio error code instead.
        """
        method = method.upper()
        if method not in ("GET", "POST"):
            method = "POST"
        url, overrides = split_fragment(self.transport.absolute(url))
        result = Fetch(method=method, url=url)
        token = os.urandom(16).hex()  # the shape of a uuid4's hex, without the UUID object
        extra = dict(headers) if headers else {}
        attempts = 1 + overrides.retries
        for attempt in range(attempts):
            try:
                await self._follow(
                    result, method, url, dict(params or {}), overrides, token, extra
                )
                return result
            except _Failure as failure:
                result.error_code = failure.code
                result.error_message = str(failure)
                retry = "all" in overrides.retry_on or failure.kind in overrides.retry_on
                if not retry or attempt == attempts - 1:
                    return result
                result.error_code, result.error_message = None, ""
        return result  # pragma: no cover - the loop always returns

    async def _follow(
        self,
        result: Fetch,
        method: str,
        url: str,
        params: dict[str, str],
        overrides: Overrides,
        token: str,
        extra: dict[str, str],
    ) -> None:
        for _hop in range(MAX_REDIRECTS + 1):
            response = await self._send(result, method, url, params, overrides, token, extra)
            status = response.status_code
            if status in _FOLLOWED:
                location = response.headers.get("location")
                if not location:
                    raise _Failure(11200, f"{url} answered {status} without a Location", "4xx")
                url, _ = split_fragment(urljoin(url, location))
                if status != 307:
                    # Like a browser: the redirected request is a GET and the form is not resent
                    # (so a Gather's Digits do not reach the new URL).
                    method, params = "GET", {}
                continue
            if 300 <= status < 400:
                raise _Failure(11216, f"{url} answered {status}; Twilio follows only "
                               "301, 302, 303 and 307", "4xx")
            result.status = status
            result.final_url = url
            result.content_type = response.headers.get("content-type", "")
            result.body = response.content
            if status >= 400 or status < 200:
                kind = "5xx" if status >= 500 else "4xx"
                raise _Failure(11200, f"HTTP retrieval failure: {method} {url} answered "
                               f"{status} (Twilio may log this as 11217)", kind)
            return
        raise _Failure(11215, f"too many redirects: more than {MAX_REDIRECTS} starting from "
                       f"{result.url}", "4xx")

    async def _send(
        self,
        result: Fetch,
        method: str,
        url: str,
        params: dict[str, str],
        overrides: Overrides,
        token: str,
        extra: dict[str, str],
    ) -> httpx.Response | AsgiResponse:
        transport = self.transport
        headers = {"User-Agent": USER_AGENT, "I-Twilio-Idempotency-Token": token, **extra}
        if method == "GET":
            if params:
                parts = urlsplit(url)
                query = encode_form(params)
                query = f"{parts.query}&{query}" if parts.query else query
                url = urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
            content = b""
            signed = transport.signer.sign(url) if transport.signer else None
        else:
            content = encode_form(params).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            signed = transport.signer.sign(url, params) if transport.signer else None
        if signed is not None:
            headers["X-Twilio-Signature"] = signed
        # In-process apps ignore httpx timeouts, so the total cap (and rt) is enforced here.
        cap = min(overrides.total_ms, overrides.read_ms) / 1000
        started = time.perf_counter()
        status: int | None = None
        try:
            async with asyncio.timeout(cap):
                if transport.host is not None:
                    response: httpx.Response | AsgiResponse = await self._send_in_process(
                        transport.host, method, url, headers, content
                    )
                else:
                    response = await self._send_http(method, url, headers, content, overrides)
            status = response.status_code
        except (TimeoutError, httpx.TimeoutException) as exc:
            connect = isinstance(exc, httpx.ConnectTimeout)
            raise _Failure(
                11205,
                f"HTTP connection failure: {method} {url} "
                + ("could not connect" if connect else "gave no answer")
                + f" within {overrides.connect_ms if connect else int(cap * 1000)} ms",
                "ct" if connect else "rt",
            ) from None
        except httpx.ConnectError as exc:
            text = str(exc)
            dns = "name or service" in text.lower() or "nodename" in text.lower()
            raise _Failure(
                11210 if dns else 11205,
                f"HTTP {'DNS resolution' if dns else 'connection'} failure: {method} {url}: {text}",
                "ct",
            ) from None
        except httpx.HTTPError as exc:
            raise _Failure(11200, f"HTTP retrieval failure: {method} {url}: {exc}", "rt") from None
        finally:
            result.exchanges.append(Exchange(
                method, url, params, status,
                round((time.perf_counter() - started) * 1000, 3),
            ))
        return response

    async def _send_in_process(
        self, host: AsgiHost, method: str, url: str, headers: dict[str, str], content: bytes
    ) -> AsgiResponse:
        raw = [(name.lower().encode("latin-1"), value.encode("latin-1"))
               for name, value in headers.items()]
        if method == "POST":
            raw.append((b"content-length", str(len(content)).encode()))
        if self.cookies.jar:  # the cookie jar is slow; most apps set no cookies
            probe = httpx.Request(method, url)
            self.cookies.set_cookie_header(probe)
            raw.append((b"cookie", probe.headers["cookie"].encode("latin-1")))
        response = await host.request(method, url, raw, content)
        if "set-cookie" in response.headers:
            self.cookies.extract_cookies(httpx.Response(
                response.status_code, headers=response.raw_headers,
                request=httpx.Request(method, url),
            ))
        return response

    async def _send_http(
        self, method: str, url: str, headers: dict[str, str], content: bytes,
        overrides: Overrides,
    ) -> httpx.Response:
        transport = self.transport
        if transport._direct is not None:
            request = httpx.Request(
                method, url, content=content if method == "POST" else None, headers=headers,
                extensions={"timeout": _timeout(overrides).as_dict()},
            )
        else:
            assert transport.client is not None
            request = transport.client.build_request(
                method, url, content=content if method == "POST" else None, headers=headers,
                timeout=_timeout(overrides),
            )
        if self.cookies.jar:  # the cookie jar is slow; most apps set no cookies
            self.cookies.set_cookie_header(request)
        if transport._direct is not None:
            response = await transport._direct.handle_async_request(request)
            response.request = request
        else:
            assert transport.client is not None
            response = await transport.client.send(request)
        await response.aread()
        if "set-cookie" in response.headers:
            self.cookies.extract_cookies(response)
        return response


_quoted: dict[str, str] = {}


def encode_form(params: Mapping[str, str]) -> str:
    """``urlencode(params)``, with each name and value quoted once and remembered: a call's
    webhooks repeat most of them (AccountSid, the numbers, CallSid, the status)."""
    return "&".join(f"{_quote(name)}={_quote(value)}" for name, value in params.items())


def _quote(text: str) -> str:
    quoted = _quoted.get(text)
    if quoted is None:
        if len(_quoted) >= 8192:
            _quoted.clear()  # bounded; emptied at once, so each text is looked up again
        quoted = _quoted[text] = quote_plus(str(text))
    return quoted


_timeouts: dict[Overrides, httpx.Timeout] = {}


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One verifying context for every transport: loading the CA bundle costs ~30 ms."""
    return httpx.create_ssl_context()


@functools.cache
def skip_missing_sniffio() -> None:
    """Make ``import sniffio`` fail fast when it is not installed.

    httpcore tries ``import sniffio`` on every request; without the package each attempt searches
    sys.path (about 0.2 ms, several times per request), which dominates load-mode CPU. Installing
    sniffio is the real fix; this only caches the miss.
    """
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]


def _timeout(overrides: Overrides) -> httpx.Timeout:
    timeout = _timeouts.get(overrides)
    if timeout is None:
        timeout = _timeouts[overrides] = httpx.Timeout(
            connect=overrides.connect_ms / 1000, read=overrides.read_ms / 1000,
            write=overrides.read_ms / 1000, pool=None,
        )
    return timeout
