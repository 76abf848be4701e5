"""Prometheus metrics of a running app: webhooks, calls, retries, transfers, latencies.

Imported only when metrics are on (``--metrics``, ``IVRKIT_METRICS=1``): prometheus_client
decides at import whether values live in memory or in files shared by worker processes
(``PROMETHEUS_MULTIPROC_DIR``), and ``ivrkit serve`` sets that variable first.

Labels are bounded by the flows' own definitions: a flow name the app loaded (anything
else is ``other``), a state of that flow, an endpoint kind, a result and cause from fixed
sets, a Dial or Enqueue outcome from Twilio's fixed sets. Never a phone number, a
CallSid, a digit or a URL.

Where the counts come from: the endpoint's :mod:`ivrkit.outcome` note (result, latency,
call started or ended), the runtime's observer hook (no-input, no-match, give-up,
transfers: counted when fired, so a webhook whose save then fails still counts them), and
a thin wrapper around the store that times its load, save and status writes.

What a webhook costs: one counter and one histogram written through children looked up
once per label set (a child's lookup costs more than its count), a call started or ended
one counter more; calls in progress are not written at all but derived at each scrape
(started less ended, by flow), and the store's timings are two clock reads and two
observations per session. In multiprocess mode every write is a write to a shared file,
so ``ivrkit serve`` uses that mode only with ``--workers`` above 1 or ``--metrics-port``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from ivrkit import nodes as n
from ivrkit.metrics_folder import (  # noqa: F401  (re-exported)
    MULTIPROC_ENV,
    multiprocess_dir,
    prepare_multiprocess_dir,
)
from ivrkit.observers import GIVE_UP_TRIGGER, CallObserver
from ivrkit.outcome import Note

if TYPE_CHECKING:
    from ivrkit.flow import Flow

OTHER = "other"
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
DIAL_OUTCOMES = frozenset(n.DIAL_STATUSES)
QUEUE_OUTCOMES = frozenset(n.QUEUE_RESULTS)
ENDPOINTS = frozenset({"incoming", "action", "status", "recording", "hold", "pay-status", "amd"})


IN_PROGRESS = "ivrkit_calls_in_progress"
IN_PROGRESS_HELP = "Calls started and not yet ended (needs the status callback URL configured)"


class WithCallsInProgress:
    """A registry's metrics, and calls in progress derived from them: calls started less
    calls ended, by flow (summed over every worker when the registry reads their files).

    Derived at the scrape rather than kept as a gauge: a gauge is one more write on the
    webhooks that start or end a call, and it says nothing the two counters do not."""

    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        in_progress: dict[str, float] = {}
        for family in self.source.collect():
            yield family
            sign = {"ivrkit_calls_started": 1, "ivrkit_calls_ended": -1}.get(family.name)
            if sign is None:
                continue
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    flow = sample.labels.get("flow", OTHER)
                    in_progress[flow] = in_progress.get(flow, 0.0) + sign * sample.value
        gauge = GaugeMetricFamily(IN_PROGRESS, IN_PROGRESS_HELP, labels=["flow"])
        for flow in sorted(in_progress):
            gauge.add_metric([flow], in_progress[flow])
        yield gauge


def _scrape(source: CollectorRegistry) -> CollectorRegistry:
    scrape = CollectorRegistry()
    scrape.register(WithCallsInProgress(source))
    return scrape


class Metrics(CallObserver):
    """The metrics of one app, and the observer that feeds the flow-level ones."""

    def __init__(self, flows: Iterable[type[Flow]]) -> None:
        self.states = {flow.name: frozenset(flow.states()) for flow in flows}
        self._children: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}
        """(flow, endpoint, result, cause) -> the counter and histogram they label:
        looking a child up by its labels costs more than counting."""
        self._started: dict[str, Any] = {}
        """flow -> its calls started counter."""
        self._ended: dict[tuple[str, str], Any] = {}
        """(flow, final status) -> its calls ended counter (statuses: Twilio's few)."""
        # Each app its own registry (tests build many apps in one process); with several
        # workers the values go to files, and a scrape reads them all (registry()).
        self.own = CollectorRegistry(auto_describe=True)
        r = self.own
        self.webhooks = Counter(
            "ivrkit_webhooks",
            "Webhooks answered, by flow, endpoint kind, result and cause",
            ["flow", "endpoint", "result", "cause"],
            registry=r,
        )
        self.webhook_seconds = Histogram(
            "ivrkit_webhook_seconds",
            "Time to answer a webhook (from its first byte read to the answer sent)",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.store_seconds = Histogram(
            "ivrkit_store_seconds",
            "Time in the store: load (the call's lock and row), save (commit), status",
            ["operation"],
            buckets=STORE_BUCKETS,
            registry=r,
        )
        self.calls_started = Counter("ivrkit_calls_started", "Calls started", ["flow"], registry=r)
        self.calls_ended = Counter(
            "ivrkit_calls_ended",
            "Calls ended, by final status (from status callbacks)",
            ["flow", "status"],
            registry=r,
        )
        # Calls in progress: derived at the scrape (WithCallsInProgress).
        self.no_input = Counter(
            "ivrkit_no_input", "Prompts met with silence", ["flow", "state"], registry=r
        )
        self.no_match = Counter(
            "ivrkit_no_match", "Entries that matched no choice", ["flow", "state"], registry=r
        )
        self.give_ups = Counter(
            "ivrkit_give_ups", "States that ran out of retries", ["flow", "state"], registry=r
        )
        self.transfers = Counter(
            "ivrkit_transfers",
            "Dial and Enqueue outcomes (completed/answered and bridged: a person took it)",
            ["flow", "kind", "outcome"],
            registry=r,
        )

    # -- labels --------------------------------------------------------------------------

    def flow_label(self, name: str) -> str:
        return name if name in self.states else OTHER

    def state_label(self, flow: str, state: str) -> str:
        return state if state in self.states.get(flow, ()) else OTHER

    # -- webhooks ------------------------------------------------------------------------

    def webhook(self, note: Note, seconds: float) -> None:
        """Count one answered webhook from its note."""
        flow = self.flow_label(note.flow)  # first: a URL's name must not grow the memo
        key = (flow, note.endpoint, note.result, note.cause)
        children = self._children.get(key)
        if children is None:  # every part of the key is from a bounded set: so is the memo
            endpoint = note.endpoint if note.endpoint in ENDPOINTS else OTHER
            children = self._children[key] = (
                self.webhooks.labels(flow, endpoint, note.result, note.cause),
                self.webhook_seconds.labels(endpoint),
            )
        children[0].inc()
        children[1].observe(seconds)
        if note.started:
            started = self._started.get(flow)
            if started is None:
                started = self._started[flow] = self.calls_started.labels(flow)
            started.inc()
        if note.ended:
            ended = self._ended.get((flow, note.ended))
            if ended is None:  # the status was validated against Twilio's set: bounded
                ended = self._ended[flow, note.ended] = self.calls_ended.labels(flow, note.ended)
            ended.inc()

    # -- the runtime's observer hook -------------------------------------------------------

    def retried(self, flow: type[Flow], state: str, trigger: str, call_sid: str) -> None:
        if trigger == "no_input":
            self.no_input.labels(flow.name, self.state_label(flow.name, state)).inc()
        elif trigger == "no_match":
            self.no_match.labels(flow.name, self.state_label(flow.name, state)).inc()

    def gave_up(self, flow: type[Flow], state: str, dest: str, call_sid: str) -> None:
        self.give_ups.labels(flow.name, self.state_label(flow.name, state)).inc()

    def trigger_taken(
        self, flow: type[Flow], source: str, trigger: str, dest: str, call_sid: str
    ) -> None:
        if trigger == GIVE_UP_TRIGGER or ":" not in trigger:
            return
        kind, _, outcome = trigger.partition(":")
        if kind == "dial":
            self.transfers.labels(
                self.flow_label(flow.name), "dial", outcome if outcome in DIAL_OUTCOMES else OTHER
            ).inc()
        elif kind == "queue":
            self.transfers.labels(
                self.flow_label(flow.name),
                "enqueue",
                outcome if outcome in QUEUE_OUTCOMES else OTHER,
            ).inc()

    # -- scraping --------------------------------------------------------------------------

    def registry(self) -> CollectorRegistry:
        """What a scrape reads: this process's registry, or every worker's files."""
        folder = multiprocess_dir()
        if folder is None:
            return _scrape(self.own)
        shared = CollectorRegistry()
        multiprocess.MultiProcessCollector(shared, path=folder)  # type: ignore[no-untyped-call]
        return _scrape(shared)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry()), CONTENT_TYPE_LATEST


def scrape_registry() -> CollectorRegistry:
    """The registry a separate metrics port serves (``--metrics-port``): every worker's."""
    folder = multiprocess_dir()
    if folder is None:
        raise RuntimeError(f"{MULTIPROC_ENV} is not set: the metrics port reads the workers' files")
    shared = CollectorRegistry()
    multiprocess.MultiProcessCollector(shared, path=folder)  # type: ignore[no-untyped-call]
    return _scrape(shared)


def process_exited() -> None:
    """This worker stops: its live gauges leave the sums (prometheus_client's rule)."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


class TimedSession:
    """A store session whose entry (the call's lock and row) and exit (the commit) are
    timed into ``ivrkit_store_seconds``."""

    __slots__ = ("inner", "load", "save")

    def __init__(self, inner: Any, load: Any, save: Any) -> None:
        self.inner = inner
        self.load = load
        self.save = save

    async def __aenter__(self) -> Any:
        started = time.perf_counter()
        try:
            return await self.inner.__aenter__()
        finally:
            self.load.observe(time.perf_counter() - started)

    async def __aexit__(self, *exc: Any) -> Any:
        started = time.perf_counter()
        try:
            return await self.inner.__aexit__(*exc)
        finally:
            self.save.observe(time.perf_counter() - started)


class TimedStore:
    """The app's store, with its webhook operations timed; everything else passes through
    (``engine``, ``load``, ``call_events``... for tools and the console)."""

    def __init__(self, store: Any, metrics: Metrics) -> None:
        self._store = store
        self._load = metrics.store_seconds.labels("load")
        self._save = metrics.store_seconds.labels("save")
        self._status = metrics.store_seconds.labels("status")

    def session(self, call_sid: str) -> TimedSession:
        return TimedSession(self._store.session(call_sid), self._load, self._save)

    async def record_status(self, update: Any) -> Any:
        started = time.perf_counter()
        try:
            return await self._store.record_status(update)
        finally:
            self._status.observe(time.perf_counter() - started)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)
