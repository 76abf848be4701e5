"""The AsyncAmd callback: record who answered, and move a call a machine answered.

With ``AsyncAmd`` the flow starts as soon as the call is answered; Twilio's verdict comes
later on ``POST /voice/{flow}/amd`` (``AnsweredBy``, ``MachineDetectionDuration``). When
the flow names a state for that verdict (``on_machine``, ``on_answered_by``), the call is
moved there in two steps:

1. under the call's lock, like any webhook: the flow is run from the target state (a
   turn of its own: the step number goes up by one, the answer is stored as the call's
   last TwiML) and committed. A webhook of the old step that arrives later (a Gather the
   machine "answered") is out of date and gets the stored answer again, so the call never
   goes on along the old path;
2. after the commit, outside the lock (a slow API must not hold the call's webhooks),
   the Calls API redirects the live call (``client.calls(sid).update(url=...)``) to the
   action URL of the step just handled, which the app answers, as it answers any retry,
   with that stored TwiML.

A call already ended, already in the target state, already given a verdict (a repeated
callback), or not started yet is not moved (the verdict is kept in
``call.data["answered_by"]``; a call not started yet then starts in the target state on
its first webhook). If the redirect fails (the call hung up
meanwhile), that is logged and the callback still gets its 204.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from twilio.rest import Client

from ivrkit.fields import shown
from ivrkit.outbound import amd
from ivrkit.outbound.place import is_async
from ivrkit.records import utcnow
from ivrkit.store import CallDataError
from ivrkit.store.contract import FINAL_STATUSES, call_of_flow
from ivrkit.webhook import Refused, Webhook

if TYPE_CHECKING:
    from starlette.types import Receive, Scope

    from ivrkit.app import Answer, IvrApp
    from ivrkit.flow import Flow

log = logging.getLogger("ivrkit.outbound")


class AmdCallbacks:
    """The ``/voice/{flow}/amd`` endpoint's work, for one app."""

    def __init__(self, ivr: IvrApp, client: Client | Callable[[], Client] | None) -> None:
        self.ivr = ivr
        self._client = client

    def client(self) -> Client:
        """The app's twilio client: given to ``create_app``, or built from the environment
        the first time a call is moved."""
        if self._client is None:
            from ivrkit.outbound.credentials import client_from_env

            self._client = client_from_env()
        if not isinstance(self._client, Client):
            self._client = self._client()
        return self._client

    async def endpoint(self, scope: Scope, receive: Receive) -> Answer:
        ivr = self.ivr
        hook = await ivr.reader.read(scope, receive)
        flow = ivr._flow_or_404(scope["path_params"]["flow"])
        answered_by = hook.params.get("AnsweredBy", "")
        if answered_by not in amd.ANSWERED_BY:
            raise Refused(
                400,
                f"AnsweredBy {shown(answered_by)} is not one of Twilio's: "
                + ", ".join(amd.ANSWERED_BY),
                kind="bad AnsweredBy",
            )
        return await ivr._in_time(self._apply(flow, hook, answered_by), hook, "AMD callback", None)

    async def _apply(self, flow: type[Flow], hook: Webhook, answered_by: str) -> Answer:
        from ivrkit.app import NO_CONTENT, STORAGE_UNAVAILABLE, Answer

        ivr, sid = self.ivr, hook.call_sid
        redirect: str | None = None
        try:
            async with ivr.store.session(sid) as session:
                record = session.record
                if record is None or not call_of_flow(record, flow.name):
                    log.info("call %s: AMD callback for an unknown call of %s", sid, flow.name)
                    return NO_CONTENT
                known = record.data.get(amd.DATA_KEY)
                record.data[amd.DATA_KEY] = answered_by
                record.updated_at = utcnow()
                route = amd.route(flow, answered_by)
                movable = (
                    route is not None
                    and known is None  # a verdict applied already (a repeated callback)
                    and record.step > 0
                    and record.status not in FINAL_STATUSES
                    and not (record.flow == flow.name and record.state == route[1])
                )
                if route is None or not movable:
                    session.save(record, ivr._event(record, "amd", hook, "", at=record.updated_at))
                    return NO_CONTENT
                key, state = route
                record.flow, record.stack, record.counters = flow.name, [], {}
                try:
                    result = await ivr.runtime.begin(
                        record, hook.params, hook.base_url, start=state, why=f"answered_by:{key}"
                    )
                except Exception:
                    log.exception("call %s: flow %s failed moving to %s", sid, flow.name, state)
                    session.log(ivr._event(record, "error", hook, "", state=state))
                    return NO_CONTENT
                session.save(
                    record,
                    ivr._event(
                        record,
                        "amd",
                        hook,
                        result.twiml,
                        state=state,
                        result=result,
                        at=record.updated_at,
                    ),
                )
                redirect = (
                    f"{hook.base_url}/voice/{quote(flow.name)}/action"
                    f"?state={quote(record.state, safe='')}&step={record.step - 1}"
                )
        except CallDataError as error:
            ivr._data_mistake(sid, error, None)
            return NO_CONTENT
        except Exception as error:
            ivr.throttle.failure("storage", error, "call %s: storage failed on AMD callback", sid)
            return Answer(STORAGE_UNAVAILABLE, 503, "text/plain; charset=utf-8")
        await self._redirect(sid, redirect)
        return NO_CONTENT

    async def _redirect(self, sid: str, url: str) -> None:
        try:
            client = self.client()
            if is_async(client):
                await client.calls(sid).update_async(url=url, method="POST")
            else:
                await asyncio.to_thread(_update, client, sid, url)
        except Exception as error:
            log.warning(
                "call %s: a machine answered, but redirecting the call failed (%s: %s); "
                "it carries on where it was",
                sid,
                type(error).__name__,
                _said(error),
            )
            return
        log.info("call %s: answered by a machine, moved to its message", sid)


def _update(client: Client, sid: str, url: str) -> Any:
    return client.calls(sid).update(url=url, method="POST")


def _said(error: Exception) -> str:
    """Twilio's own words for an API error, one line; for anything else (a connection
    error, whose text holds the request URL) only its kind, already in the log line."""
    text = str(getattr(error, "msg", "") or "").strip()
    return text.splitlines()[0][:160] if text else "no answer from Twilio's API"
