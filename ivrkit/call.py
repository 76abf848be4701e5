"""What a flow's own code sees of a call: who is calling, its data, and the time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class CallerInfo:
    """Caller details Twilio sends when it knows them (often empty)."""

    name: str = ""
    city: str = ""
    state: str = ""
    zip: str = ""
    country: str = ""


@dataclass
class Call:
    """One phone call as a flow sees it.

    ``data`` persists with the call's state between webhooks (JSON-serialisable values only);
    ``now`` is the app's clock (UTC wall clock, or the ``clock`` given to ``create_app``),
    or on a test or dev server (``Settings(trust_simulated_time=True)``, ``--insecure-dev``)
    the simulator's virtual time for the call (``X-Ivrkit-Sim-Time``), so business-hours
    logic can be tested at any time of day.
    """

    sid: str
    from_number: str
    to_number: str
    direction: str
    caller: CallerInfo
    now: datetime
    flow: str
    state: str
    data: dict[str, Any] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_params(
        cls,
        params: Mapping[str, str],
        *,
        now: datetime,
        flow: str,
        state: str,
        data: dict[str, Any],
    ) -> Call:
        return cls(
            sid=params.get("CallSid", ""),
            from_number=params.get("From", ""),
            to_number=params.get("To", ""),
            direction=params.get("Direction", "inbound"),
            caller=CallerInfo(
                name=params.get("CallerName", ""),
                city=params.get("FromCity", ""),
                state=params.get("FromState", ""),
                zip=params.get("FromZip", ""),
                country=params.get("FromCountry", ""),
            ),
            now=now,
            flow=flow,
            state=state,
            data=data,
            params=params,
        )
