"""A funnel as text (for people), JSON (for tools) or CSV (for spreadsheets)."""

from __future__ import annotations

import csv
import io
import json

from ivrkit.stats.model import ENDINGS, Funnel

CSV_COLUMNS = (
    "flow",
    "state",
    "reached",
    "dropped",
    "drop_off_rate",
    "answers",
    "no_input",
    "no_input_rate",
    "no_match",
    "no_match_rate",
    "give_ups",
    "median_seconds",
    "p90_seconds",
)


def as_json(funnel: Funnel) -> str:
    return json.dumps(funnel.to_dict(), indent=2)


def as_csv(funnel: Funnel) -> str:
    """One row per state, then one per transition (``kind`` tells them apart)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("kind", *CSV_COLUMNS, "trigger", "dest", "count"))
    for s in funnel.states:
        writer.writerow(
            (
                "state",
                s.flow,
                s.state,
                s.reached,
                s.dropped,
                f"{s.drop_off_rate:.4f}",
                s.answers,
                s.no_input,
                f"{s.no_input_rate:.4f}",
                s.no_match,
                f"{s.no_match_rate:.4f}",
                s.give_ups,
                _opt(s.median_seconds),
                _opt(s.p90_seconds),
                "",
                "",
                "",
            )
        )
    for t in funnel.transitions:
        blanks = [""] * (len(CSV_COLUMNS) - 2)
        writer.writerow(("transition", t.flow, t.source, *blanks, t.trigger, t.dest, t.count))
    return out.getvalue()


def as_text(funnel: Funnel) -> str:
    period = ""
    if funnel.since or funnel.until:
        since = funnel.since.isoformat(sep=" ") if funnel.since else "the start"
        until = funnel.until.isoformat(sep=" ") if funnel.until else "now"
        period = f", started from {since} to {until} (UTC)"
    lines = [
        f"{funnel.flow or 'all flows'}: {funnel.calls} call(s){period}",
        "ended: "
        + ", ".join(f"{name.replace('_', ' ')} {funnel.endings.get(name, 0)}" for name in ENDINGS),
        f"containment: {funnel.containment_rate:.1%} of {funnel.ended} ended call(s) "
        "(completed in the IVR or voicemail)",
        "",
    ]
    header = (
        f"{'state':<28} {'reached':>7} {'dropped':>7} {'drop%':>6} {'median s':>9} "
        f"{'p90 s':>8} {'noinput%':>8} {'nomatch%':>8} {'giveups':>7}"
    )
    lines.append(header)
    for s in funnel.states:
        name = s.state if funnel.flow else f"{s.flow}.{s.state}"
        lines.append(
            f"{name[:28]:<28} {s.reached:>7} {s.dropped:>7} {s.drop_off_rate:>6.1%} "
            f"{_opt(s.median_seconds):>9} {_opt(s.p90_seconds):>8} "
            f"{s.no_input_rate:>8.1%} {s.no_match_rate:>8.1%} {s.give_ups:>7}"
        )
    lines += ["", "transitions:"]
    for t in funnel.transitions:
        prefix = "" if funnel.flow else f"{t.flow}."
        lines.append(f"  {t.count:>7}  {prefix}{t.source} -{t.trigger}-> {t.dest}")
    return "\n".join(lines) + "\n"


def _opt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


FORMATS = {"text": as_text, "json": as_json, "csv": as_csv}
