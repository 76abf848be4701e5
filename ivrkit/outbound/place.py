"""Placing an outbound call into a flow through Twilio's Calls API.

The order of things, and why:

1. ``client.calls.create`` (a blocking HTTP request: it runs in a worker thread, never on
   the event loop) with ``Url`` = the flow's webhook on ``IVRKIT_PUBLIC_URL`` marked
   ``placed=1``, status callbacks for every event, and the machine-detection options;
2. the call's row, with its ``data``, is stored under the CallSid Twilio returned
   (``store.prepare_call``), before the function returns;
3. the call's first webhook starts the flow on that row. Twilio may be faster than step 2
   (the create answer and the first webhook race), so a first webhook marked ``placed=1``
   that finds no row waits for it (:func:`ivrkit.outbound.arrival.wait_for_row`).

Steps 1 and 2 run shielded: a caller that cancels ``place_call`` once Twilio has the
request cannot leave a placed call without its row. When the row cannot be stored, the
call is canceled (best effort) rather than let a person hear the flow without its data.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode

from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from ivrkit.errors import (
    CallerIdError,
    ConfigError,
    InvalidNumberError,
    PlaceCallError,
    RateLimitedError,
    TwilioAuthError,
)
from ivrkit.masking import mask_number
from ivrkit.outbound import amd
from ivrkit.outbound.credentials import client_from_env
from ivrkit.records import CallRecord, utcnow
from ivrkit.store.contract import encode_record

if TYPE_CHECKING:
    from ivrkit.flow import Flow

log = logging.getLogger("ivrkit.outbound")

AUTO = "auto"
MACHINE_DETECTION = ("Enable", "DetectMessageEnd")
"""Twilio's MachineDetection modes: the first classification, or wait for the greeting's end."""
STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")
PLACED_MARK = "placed"
"""Query field of the Url: a call ivrkit placed, whose row its first webhook waits for."""
ASYNC_MARK = "amd"
"""Query field of the Url (``amd=async``): AnsweredBy comes on the AMD callback, not here."""

_in_flight: set[asyncio.Task[Any]] = set()  # shielded placements outliving a cancelled caller


class PlacedCalls(Protocol):
    """What placing a call and reading its outcome need of a store: every store has it,
    and so has :class:`~ivrkit.outbound.placer.SqlitePlacer` (another process's view of
    an SQLite file a server owns)."""

    async def prepare_call(self, record: CallRecord) -> bool: ...

    async def load(self, call_sid: str) -> CallRecord | None: ...


class OpenedPlacedCalls(PlacedCalls, Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...


def placing_store(database_url: str) -> OpenedPlacedCalls:
    """The store to place calls into from this process (not yet opened): PostgreSQL's own
    store, or for SQLite an inserter that leaves the file to the server that owns it."""
    from ivrkit.store import create_store

    if database_url.startswith("sqlite"):
        from ivrkit.outbound.placer import SqlitePlacer

        return SqlitePlacer(database_url)
    return create_store(database_url)


@dataclass(frozen=True)
class PlacedCall:
    """What Twilio answered: the CallSid and the status it gave the new call."""

    call_sid: str
    status: str


async def place_call(
    flow: type[Flow],
    *,
    to: str,
    from_: str,
    data: Mapping[str, Any] | None = None,
    machine_detection: str | None = AUTO,
    async_amd: bool = False,
    machine_detection_timeout: int | None = None,
    ring_timeout: int | None = None,
    time_limit: int | None = None,
    store: PlacedCalls | None = None,
    client: Client | None = None,
    public_url: str | None = None,
) -> str:
    """Call ``to`` from ``from_`` into ``flow``; returns the CallSid once its row is stored.

    ``data`` becomes the call's ``call.data`` (the codec's types). ``machine_detection``:
    ``"Enable"``, ``"DetectMessageEnd"``, None (off), or ``"auto"``: DetectMessageEnd when
    the flow declares ``on_machine``/``on_answered_by`` (a message is left after the beep),
    else off. ``async_amd``: the flow starts at once and a machine is moved when Twilio
    says so. ``store`` defaults to the one ``IVRKIT_DATABASE_URL`` names (opened and closed
    here; on SQLite that works only while no server holds the file, so a server's own
    code passes its store), ``client`` to one built from the environment
    (:func:`~ivrkit.outbound.credentials.client_from_env`), ``public_url`` to
    ``IVRKIT_PUBLIC_URL``.

    Raises a :class:`PlaceCallError` subclass when Twilio refuses (invalid number, caller
    ID, authentication, rate limit) and :class:`ConfigError` when a setting is missing;
    ``data`` the store could not keep is refused (:class:`CallDataError`) before any call
    is placed.
    """
    from ivrkit.config import Settings

    settings = Settings.from_env() if store is None or public_url is None else None
    base = (public_url or (settings.public_url if settings else None) or "").rstrip("/")
    if not base:
        raise ConfigError(
            "IVRKIT_PUBLIC_URL is not set: Twilio needs the https URL where ivrkit serves "
            "the flow (e.g. https://ivr.example.com); pass public_url= or set it"
        )
    params = call_parameters(
        flow,
        base,
        to=to,
        from_=from_,
        machine_detection=machine_detection,
        async_amd=async_amd,
        machine_detection_timeout=machine_detection_timeout,
        ring_timeout=ring_timeout,
        time_limit=time_limit,
    )
    values = dict(data or {})
    # Refused before Twilio is asked: a call whose data cannot be kept is never placed.
    encode_record(placed_record(flow, "CA(check)", to=to, data=values))
    client = client or client_from_env()
    if store is not None:
        return await _shielded(_place(flow, client, store, params, values))
    assert settings is not None
    return await _shielded(
        _place_with_own_store(settings.database_url, flow, client, params, values)
    )


async def _place_with_own_store(
    database_url: str,
    flow: type[Flow],
    client: Client,
    params: dict[str, Any],
    data: dict[str, Any],
) -> str:
    """Open a store, place, close: all shielded together, so a cancelled caller cannot
    close the store under a placement still storing its row."""
    own = placing_store(database_url)
    await own.open()
    try:
        return await _place(flow, client, own, params, data)
    finally:
        await own.close()


def call_parameters(
    flow: type[Flow],
    base: str,
    *,
    to: str,
    from_: str,
    machine_detection: str | None = AUTO,
    async_amd: bool = False,
    machine_detection_timeout: int | None = None,
    ring_timeout: int | None = None,
    time_limit: int | None = None,
) -> dict[str, Any]:
    """The keyword arguments of ``client.calls.create`` for a call into ``flow``."""
    detection = machine_detection
    if detection == AUTO:
        detection = "DetectMessageEnd" if amd.wants_detection(flow) else None
    if detection is not None and detection not in MACHINE_DETECTION:
        raise ValueError(
            f"machine_detection={detection!r}: use {', '.join(MACHINE_DETECTION)}, "
            f"None (off) or {AUTO!r}"
        )
    if async_amd and detection is None:
        raise ValueError("async_amd=True needs machine detection (machine_detection=...)")
    query = {PLACED_MARK: "1"}
    if async_amd:
        query[ASYNC_MARK] = "async"
    root = f"{base}/voice/{flow.name}"
    params: dict[str, Any] = {
        "to": to,
        "from_": from_,
        "url": f"{root}?{urlencode(query)}",
        "method": "POST",
        "status_callback": f"{root}/status?{PLACED_MARK}=1",
        "status_callback_method": "POST",
        "status_callback_event": list(STATUS_EVENTS),
    }
    if detection is not None:
        params["machine_detection"] = detection
        if machine_detection_timeout is not None:
            params["machine_detection_timeout"] = machine_detection_timeout
        if async_amd:
            params["async_amd"] = "true"
            params["async_amd_status_callback"] = f"{root}/amd"
            params["async_amd_status_callback_method"] = "POST"
    if ring_timeout is not None:
        params["timeout"] = ring_timeout
    if time_limit is not None:
        params["time_limit"] = time_limit
    return params


async def _shielded(work: Any) -> str:
    """Run ``work`` to its end even if our caller is cancelled meanwhile."""
    task: asyncio.Task[str] = asyncio.ensure_future(work)
    _in_flight.add(task)
    task.add_done_callback(_in_flight.discard)
    return await asyncio.shield(task)


async def _place(
    flow: type[Flow],
    client: Client,
    store: PlacedCalls,
    params: dict[str, Any],
    data: dict[str, Any],
) -> str:
    to = params["to"]
    placed = await create_call(client, params)
    record = placed_record(flow, placed.call_sid, to=to, data=data, status=placed.status)
    try:
        first = await store.prepare_call(record)
    except Exception as error:
        canceled = await _cancel(client, placed.call_sid)
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
        raise PlaceCallError(
            f"call {placed.call_sid} to {mask_number(to)} was placed but its data could not "
            f"be stored ({type(error).__name__}{': ' + reason if reason else ''}); "
            + ("it was canceled" if canceled else "canceling it failed too: it may still ring"),
        ) from error
    if not first:
        log.warning(
            "call %s: its first webhook came before its data was stored; the flow started "
            "without it, and the data was added to the call",
            placed.call_sid,
        )
    log.info("call %s placed to %s into %s", placed.call_sid, mask_number(to), flow.name)
    return placed.call_sid


def placed_record(
    flow: type[Flow], call_sid: str, *, to: str, data: dict[str, Any], status: str = "queued"
) -> CallRecord:
    """The row ``prepare_call`` stores for a call just placed: step 0, not started."""
    now = utcnow()
    return CallRecord(
        call_sid=call_sid,
        flow=flow.name,
        flow_version=flow.version(),
        state=flow.initial_state(),
        step=0,
        status=status or "queued",
        caller=mask_number(to),
        data=data,
        created_at=now,
        updated_at=now,
    )


async def create_call(client: Client, params: dict[str, Any]) -> PlacedCall:
    """``client.calls.create(**params)``, errors made typed and clear.

    A client with an asynchronous HTTP client (``http_client.is_async``: twilio's aiohttp
    one, or the simulator's in-process one) is awaited on the loop; any other blocks, so
    it runs in a worker thread (the default executor's few threads bound how many
    requests are in flight at once)."""
    try:
        if is_async(client):
            call = await client.calls.create_async(**params)
        else:
            call = await asyncio.to_thread(client.calls.create, **params)
    except TwilioRestException as error:
        raise api_error(error, to=params.get("to", ""), from_=params.get("from_", "")) from None
    except Exception as error:  # the library's HTTP layer: connection refused, timeout...
        raise PlaceCallError(
            f"cannot reach Twilio's Calls API ({type(error).__name__}): check the network "
            "and the client's base URL",
        ) from None
    return PlacedCall(call_sid=str(call.sid), status=str(call.status or "queued"))


def api_error(error: TwilioRestException, *, to: str, from_: str) -> PlaceCallError:
    """A TwilioRestException as the typed error of its code, in one line, numbers masked."""
    code = error.code if isinstance(error.code, int) else None
    status = error.status
    said = str(error.msg or "").removeprefix("Unable to create record: ").strip()
    said = said.replace(to, mask_number(to)) if to else said
    said = said.replace(from_, mask_number(from_)) if from_ else said
    detail = f"Twilio error {code}: {said}" if said else f"Twilio error {code}"
    if code == 21211:
        return InvalidNumberError(
            f"cannot call {mask_number(to)}: not a valid phone number ({detail}); "
            "give it in E.164 form, e.g. +14155550100",
            code=code,
            status=status,
        )
    if code in (21210, 21212):
        return CallerIdError(
            f"cannot call from {mask_number(from_)}: not a number or verified caller ID of "
            f"this account ({detail}); use one of the account's numbers",
            code=code,
            status=status,
        )
    if code == 20003 or status == 401:
        return TwilioAuthError(
            f"Twilio refused the credentials ({detail}): check TWILIO_ACCOUNT_SID and "
            "TWILIO_AUTH_TOKEN (or TWILIO_API_KEY and TWILIO_API_SECRET)",
            code=code,
            status=status,
        )
    if code == 20429 or status == 429:
        return RateLimitedError(
            f"Twilio asked to slow down ({detail}): place calls more slowly and try again",
            code=code,
            status=status,
        )
    return PlaceCallError(
        f"Twilio refused to place the call (HTTP {status}, {detail})", code=code, status=status
    )


def is_async(client: Client) -> bool:
    """Whether the client's requests are awaited (twilio's ``*_async`` methods)."""
    return bool(getattr(client.http_client, "is_async", False))


async def _cancel(client: Client, call_sid: str) -> bool:
    """Best effort: cancel a queued or ringing call (an answered one is completed)."""
    try:
        if is_async(client):
            await client.calls(call_sid).update_async(status="canceled")
        else:
            await asyncio.to_thread(client.calls(call_sid).update, status="canceled")
    except Exception as error:
        log.error("call %s: could not cancel it (%s)", call_sid, type(error).__name__)
        return False
    return True
