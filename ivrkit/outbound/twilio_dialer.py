"""The campaign's :class:`~ivrkit.outbound.dialer.Dialer` over Twilio: ``place_call`` to
place, ``call_outcome`` (the store the server writes) to learn how a call ended."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from ivrkit.errors import (
    CallerIdError,
    InvalidNumberError,
    PlaceCallError,
    RateLimitedError,
    TwilioAuthError,
)
from ivrkit.outbound.dialer import (
    AuthFailed,
    CallRequest,
    DialOutcome,
    DialRefused,
    DialUnknown,
    InvalidNumber,
    RateLimited,
    Unreachable,
)
from ivrkit.outbound.outcome import call_outcome
from ivrkit.outbound.place import AUTO, PlacedCalls, place_call
from ivrkit.store.codec import CallDataError
from ivrkit.store.contract import FINAL_STATUSES

if TYPE_CHECKING:
    from twilio.rest import Client

    from ivrkit.flow import Flow


log = logging.getLogger("ivrkit.campaign")


class TwilioDialer:
    """Places a campaign's calls into ``flow`` with ``client``; their rows go to ``store``
    (the server's store, or ``placing_store`` beside a server that owns an SQLite file)."""

    def __init__(
        self,
        flow: type[Flow],
        *,
        store: PlacedCalls,
        client: Client,
        public_url: str,
        async_amd: bool = False,
        api_check_after: float = 20.0,
    ) -> None:
        self.flow = flow
        self.store = store
        self.client = client
        self.public_url = public_url
        self.async_amd = async_amd
        self.api_check_after = api_check_after
        """Seconds without a final status in the store before Twilio's API is asked
        (five times that once the call is in progress)."""
        self._first_asked: dict[str, float] = {}

    async def place(self, request: CallRequest) -> str:
        try:
            return await place_call(
                self.flow,
                to=request.to,
                from_=request.from_,
                data=request.data,
                machine_detection=request.machine_detection or AUTO,
                async_amd=self.async_amd,
                store=self.store,
                client=self.client,
                public_url=self.public_url,
            )
        except InvalidNumberError as error:
            raise InvalidNumber(str(error), code=error.code) from None
        except CallDataError as error:
            raise InvalidNumber(f"the contact's data cannot be stored: {error}") from None
        except (TwilioAuthError, CallerIdError) as error:
            raise AuthFailed(str(error), code=error.code) from None
        except RateLimitedError as error:
            raise RateLimited(str(error), code=error.code) from None
        except PlaceCallError as error:
            if error.status is not None:
                raise DialRefused(str(error), code=error.code) from None
            if never_sent(error):
                raise Unreachable(str(error)) from None
            raise DialUnknown(str(error)) from None

    async def outcome(self, call_sid: str) -> DialOutcome | None:
        """From the store the server writes; from Twilio's API when the store has had no
        final status for ``api_check_after`` seconds (a status callback lost while the
        server was down, or one that came before the call's row)."""
        found = await call_outcome(self.store, call_sid)
        if found is not None and found.status is not None:
            self._first_asked.pop(call_sid, None)
            return DialOutcome(
                status=found.status,
                answered_by=found.answered_by,
                data=found.data,
                state=found.state.split(">")[0],  # "confirmed>next": the state reached
            )
        first = self._first_asked.setdefault(call_sid, time.monotonic())
        # A call the flow is running may last minutes: ask Twilio less often about it.
        running = found is not None and found.last_status == "in-progress"
        wait = self.api_check_after * (5 if running else 1)
        if time.monotonic() - first < wait:
            return None
        self._first_asked[call_sid] = time.monotonic()  # next API check one period later
        try:
            call = await asyncio.to_thread(self.client.calls(call_sid).fetch)
        except Exception as error:
            log.warning(
                "call %s: Twilio's API could not be asked (%s)", call_sid, type(error).__name__
            )
            return None
        status = str(call.status or "")
        if status not in FINAL_STATUSES:
            return None
        self._first_asked.pop(call_sid, None)
        log.warning(
            "call %s: its final status %s came from Twilio's API, not a callback", call_sid, status
        )
        return DialOutcome(
            status=status,
            answered_by=call.answered_by or (found.answered_by if found else None),
            data=found.data if found else {},
            state=found.state.split(">")[0] if found else None,
        )


def never_sent(error: BaseException) -> bool:
    """Whether the HTTP layer failed before the request left (refused, DNS, connect
    timeout): only then is it certain that no call was created."""
    seen: set[int] = set()
    current: Any = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        name = type(current).__name__
        if name in ("ConnectTimeout", "NewConnectionError", "NameResolutionError") or isinstance(
            current, ConnectionRefusedError
        ):
            return True
        reason = getattr(current, "reason", None)  # urllib3's MaxRetryError
        if reason is not None and _never_sent_reason(reason):
            return True
        args = getattr(current, "args", ())
        nested = next((a for a in args if isinstance(a, BaseException)), None)
        current = nested or current.__cause__ or current.__context__
    return False


def _never_sent_reason(reason: Any) -> bool:
    return type(reason).__name__ in (
        "NewConnectionError",
        "NameResolutionError",
        "ConnectTimeoutError",
    )
