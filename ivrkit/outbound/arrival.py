"""The first webhook of a call ivrkit placed, when it comes before the call's row.

``place_call`` stores the row as soon as Twilio's create request answers, but Twilio may
fetch the ``Url`` first (the two race over the network, and the simulator can be fast).
Such a first webhook, marked ``placed=1``, waits for the row outside the call's lock (so
``prepare_call`` can take it), for at most ``ROW_WAIT`` seconds, well inside the webhook
deadline; after that the flow starts without the data, and ``prepare_call`` adds it later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from ivrkit.outbound.amd import ANSWERED_BY, DATA_KEY, route
from ivrkit.outbound.place import ASYNC_MARK
from ivrkit.records import CallRecord, utcnow
from ivrkit.store.contract import FINAL_STATUSES

if TYPE_CHECKING:
    from ivrkit.flow import Flow
    from ivrkit.store.contract import StoreContract

ROW_WAIT = 2.0
"""Seconds a placed call's first webhook waits for its row."""
POLL_FIRST = 0.005
POLL_MAX = 0.1


async def wait_for_row(store: StoreContract, call_sid: str, *, limit: float | None = None) -> bool:
    """Whether the call's row exists, waiting up to ``limit`` (``ROW_WAIT``) seconds."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + (ROW_WAIT if limit is None else limit)
    delay = POLL_FIRST
    while True:
        try:
            if await store.load(call_sid) is not None:
                return True
        except Exception:  # the session that follows meets it too, and answers for it
            return False
        left = give_up - loop.time()
        if left <= 0:
            return False
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 2, POLL_MAX)


def prepared(record: CallRecord) -> bool:
    """A row ``prepare_call`` stored whose first webhook has not been handled yet."""
    return record.step == 0 and not record.last_twiml and record.status not in FINAL_STATUSES


def starting(
    record: CallRecord, flow: type[Flow], params: Mapping[str, str], now: datetime
) -> CallRecord:
    """A prepared row made ready for its first webhook into ``flow`` (its URL's flow)."""
    record.flow = flow.name
    record.flow_version = flow.version()
    record.state = flow.initial_state()
    record.status = params.get("CallStatus") or "in-progress"
    record.updated_at = now
    return record


def first_route(
    flow: type[Flow], record: CallRecord, params: Mapping[str, str], query: Mapping[str, str]
) -> tuple[str | None, str]:
    """(state, why) a call starts in by who answered, or (None, "") for the initial state.

    Synchronous detection puts AnsweredBy on the first webhook. With AsyncAmd (the Url
    says ``amd=async``) an AnsweredBy there is not trusted (Twilio's docs leave open what
    it holds then); the verdict counts only if the AMD callback stored it already."""
    answered_by = params.get("AnsweredBy", "")
    if query.get(ASYNC_MARK) == "async" or answered_by not in ANSWERED_BY:
        answered_by = record.data.get(DATA_KEY, "")
    else:
        record.data[DATA_KEY] = answered_by
    found = route(flow, answered_by) if answered_by in ANSWERED_BY else None
    if found is None:
        return None, ""
    key, state = found
    return state, f"answered_by:{key}"


async def keep_answered_by(store: StoreContract, call_sid: str, answered_by: str) -> None:
    """A status callback's AnsweredBy, kept in ``call.data`` unless the call knows it
    already (the first webhook or the AMD callback told it): then nothing is written."""
    async with store.session(call_sid) as session:
        record = session.record
        if record is None or DATA_KEY in record.data:
            return
        record.data[DATA_KEY] = answered_by
        record.updated_at = utcnow()
        session.save(record)
