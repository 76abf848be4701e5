"""What makes metrics cheap keeps them right: calls in progress derived at the scrape,
label children looked up once, and one process counting in memory rather than in files."""

from __future__ import annotations

import os
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from flows.support_line import SupportLine
from ivrkit.metrics import IN_PROGRESS, Metrics, WithCallsInProgress
from ivrkit.outcome import Note
from tests.driver import TOKEN
from tests.test_metrics import samples, start_server, stop_server, value, wait_ready, walk_call
from tests.test_serve_cli import free_port


def note(flow: str, endpoint: str, *, started: bool = False, ended: str = "") -> Note:
    made = Note(flow, endpoint)
    made.started = started
    made.ended = ended
    return made


def test_calls_in_progress_are_started_less_ended_by_flow() -> None:
    metrics = Metrics([SupportLine])
    for _ in range(3):
        metrics.webhook(note("support_line", "incoming", started=True), 0.01)
    metrics.webhook(note("support_line", "status", ended="completed"), 0.001)
    metrics.webhook(note("support_line", "status", ended="busy"), 0.001)
    metrics.webhook(note("not_a_flow", "status", ended="completed"), 0.001)  # never started
    body, _ = metrics.exposition()
    text = body.decode()
    found = samples(text)
    assert value(found, IN_PROGRESS, flow="support_line") == 1
    assert value(found, IN_PROGRESS, flow="other") == -1  # as a gauge taken down would say
    assert value(found, "ivrkit_calls_started_total", flow="support_line") == 3
    assert value(found, "ivrkit_calls_ended_total", flow="support_line", status="busy") == 1
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == IN_PROGRESS]
    assert family.type == "gauge"
    assert f"# HELP {IN_PROGRESS} Calls started" in text
    assert text.count(f"# TYPE {IN_PROGRESS} gauge") == 1


def test_no_calls_no_in_progress_samples() -> None:
    metrics = Metrics([SupportLine])
    metrics.webhook(note("support_line", "action"), 0.01)
    found = samples(metrics.exposition()[0].decode())
    assert not [key for key in found if key[0] == IN_PROGRESS]
    assert (
        value(
            found,
            "ivrkit_webhooks_total",
            flow="support_line",
            endpoint="action",
            result="answered",
            cause="",
        )
        == 1
    )


def test_derived_collector_passes_every_family_through() -> None:
    metrics = Metrics([SupportLine])
    metrics.webhook(note("support_line", "incoming", started=True), 0.01)
    names = [f.name for f in WithCallsInProgress(metrics.own).collect()]
    assert names[-1] == IN_PROGRESS
    assert {"ivrkit_webhooks", "ivrkit_webhook_seconds", "ivrkit_store_seconds"} <= set(names)


def test_children_are_looked_up_once_per_label_set() -> None:
    metrics = Metrics([SupportLine])
    for n in range(50):
        metrics.webhook(note(f"url_name_{n}", "status", started=True, ended="completed"), 0.01)
        metrics.webhook(note("support_line", "incoming", started=True), 0.01)
    # Unknown names are "other" before the memo: it holds bounded keys only.
    assert set(metrics._children) == {
        ("other", "status", "answered", ""),
        ("support_line", "incoming", "answered", ""),
    }
    assert set(metrics._started) == {"other", "support_line"}
    assert set(metrics._ended) == {("other", "completed")}
    found = samples(metrics.exposition()[0].decode())
    assert value(found, "ivrkit_calls_started_total", flow="other") == 50
    assert value(found, "ivrkit_calls_started_total", flow="support_line") == 50
    assert value(found, IN_PROGRESS, flow="other") == 0
    assert value(found, "ivrkit_webhook_seconds_count", endpoint="incoming") == 50


def test_one_process_counts_in_memory(tmp_path: Any) -> None:
    """``serve --metrics`` with one worker writes no files, even with the folder set."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    port = free_port()
    env = {
        **os.environ,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "IVRKIT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}",
        "PROMETHEUS_MULTIPROC_DIR": str(folder),
    }
    process, output = start_server(["--port", str(port), "--metrics"], env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, output)
        walk_call(base, 1)
        walk_call(base, 2)
        text = httpx.get(f"{base}/metrics").text
    finally:
        stop_server(process, output)
    found = samples(text)
    assert value(found, "ivrkit_calls_started_total", flow="support_line") == 2
    assert value(found, IN_PROGRESS, flow="support_line") == 0
    assert value(found, "ivrkit_webhook_seconds_count", endpoint="action") == 4
    assert value(found, "ivrkit_store_seconds_count", operation="save") >= 6
    assert list(folder.iterdir()) == []  # nothing written to files
