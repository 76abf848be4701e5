"""A flow's figures for the console, from the funnel analytics of ``ivrkit.stats``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ivrkit.stats import Funnel, StateStats
from ivrkit.stats import funnel as compute_funnel


@dataclass
class FlowReport:
    """What the flows page and a flow's page show of one flow for one period."""

    flow: str
    calls: int = 0
    endings: dict[str, int] = field(default_factory=dict)
    containment_rate: float = 0.0
    states: list[StateStats] = field(default_factory=list)
    funnel: Funnel | None = None

    def summary(self) -> dict[str, Any]:
        worst = max(self.states, key=lambda s: (s.dropped, s.state), default=None)
        return {
            "calls": self.calls,
            "containment": f"{self.containment_rate:.0%}" if self.calls else "-",
            "endings": self.endings,
            "drop_off_state": worst.state if worst is not None and worst.dropped else "",
            "drop_off": worst.dropped if worst is not None else 0,
        }

    def state_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "state": s.state,
                "reached": s.reached,
                "dropped": s.dropped,
                "drop_off": f"{s.drop_off_rate:.0%}" if s.reached else "-",
                "no_input": f"{s.no_input_rate:.0%}" if s.answers else "-",
                "no_match": f"{s.no_match_rate:.0%}" if s.answers else "-",
                "median": "-" if s.median_seconds is None else f"{s.median_seconds:.1f} s",
            }
            for s in sorted(self.states, key=lambda s: -s.reached)
        ]


async def flow_report(store: Any, flow: str, since: datetime | None) -> FlowReport:
    """The funnel of ``flow`` for calls started since ``since`` (all when None)."""
    report: Funnel = await compute_funnel(store, flow=flow, since=since)
    return FlowReport(
        flow=flow,
        calls=report.calls,
        endings={k: v for k, v in report.endings.items() if v},
        containment_rate=report.containment_rate,
        states=[s for s in report.states if s.flow == flow],
        funnel=report,
    )
