"""What became of a placed call, read from the store: for campaigns and reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ivrkit.outbound.amd import DATA_KEY
from ivrkit.store.contract import FINAL_STATUSES

if TYPE_CHECKING:
    from ivrkit.outbound.place import PlacedCalls


@dataclass(frozen=True)
class CallOutcome:
    """One call as it stands.

    ``status`` is the final CallStatus (completed, busy, no-answer, failed, canceled), or
    None while the call is queued, ringing or in progress; ``last_status`` what Twilio last
    said in any case. ``answered_by`` is Twilio's AnsweredBy (None when no detection ran or
    it is not known yet); ``data`` is the call's ``call.data`` as the flow left it (a
    reminder's ``confirmed``, a survey's answers); ``state`` the flow state it reached.
    """

    call_sid: str
    status: str | None
    last_status: str
    answered_by: str | None
    duration: int | None
    flow: str
    state: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.status is not None


async def call_outcome(store: PlacedCalls, call_sid: str) -> CallOutcome | None:
    """The call's outcome, or None when the store holds no call with this CallSid."""
    record = await store.load(call_sid)
    if record is None:
        return None
    answered_by = record.data.get(DATA_KEY)
    return CallOutcome(
        call_sid=record.call_sid,
        status=record.status if record.status in FINAL_STATUSES else None,
        last_status=record.status,
        answered_by=answered_by if isinstance(answered_by, str) else None,
        duration=record.duration,
        flow=record.flow,
        state=record.state,
        data=dict(record.data),
    )
