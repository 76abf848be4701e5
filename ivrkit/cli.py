"""The ``ivrkit`` command: serve flows, check, draw and catalogue them, and read the event log."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from ivrkit.config import Settings
from ivrkit.console.command import add_parser as add_console_parser
from ivrkit.errors import (
    ConfigError,
    FlowDefinitionError,
    FlowLoadError,
    FlowRuntimeError,
    IvrkitError,
    StoreInUseError,
)
from ivrkit.flow import Flow
from ivrkit.loader import load_flows
from ivrkit.logs import TEXT_FORMAT, JsonFormatter, formatter_config
from ivrkit.runtime import FlowRegistry
from ivrkit.sensitive import require_keys
from ivrkit.validation import check_subflows

FLOWS_ENV = "IVRKIT_FLOWS"
LOG_FORMAT = TEXT_FORMAT


def serve_log_config(level: str, log_format: str = "text") -> dict[str, object]:
    """The logging of ``ivrkit serve``, for uvicorn to apply in every process it starts.

    uvicorn configures logging again in each worker process (``--workers 2``) from its own
    defaults, which leave the root logger bare: ivrkit's INFO lines vanished and warnings
    lost their format. Given as ``log_config``, this applies in each of them, so the
    workers log exactly like one process; the process id tells them apart.
    """
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"ivrkit": formatter_config(log_format, LOG_FORMAT)},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "ivrkit",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        # uvicorn's own lines go through the root handler too (one format).
        "loggers": {
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": level, "propagate": True},
        },
    }


def _load_or_exit(paths: list[str]) -> list:  # type: ignore[type-arg]
    try:
        flows = load_flows(paths)
        FlowRegistry(flows)
    except FlowDefinitionError as error:
        print("ivrkit: the flows have errors; fix them and start again:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(2) from None
    except (FlowLoadError, FlowRuntimeError) as error:
        print(f"ivrkit: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    return flows


def app_factory():  # type: ignore[no-untyped-def]
    """Entry point for uvicorn workers: flows and settings come from the environment."""
    from ivrkit.app import create_app

    paths = os.environ[FLOWS_ENV].split(os.pathsep)
    return create_app(_load_or_exit(paths), settings=Settings.from_env())


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env(
            database_url=args.database_url,
            public_url=args.public_url,
            host=args.host,
            port=args.port,
            insecure_dev=True if args.insecure_dev else None,
            metrics=True if args.metrics or args.metrics_port else None,
            metrics_port=args.metrics_port,
        )
        settings.require_token()
    except ConfigError as error:
        print(f"ivrkit: {error}", file=sys.stderr)
        return 2
    flows = _load_or_exit(args.paths)
    try:
        require_keys(flows)
    except ConfigError as error:
        print(f"ivrkit: {error}", file=sys.stderr)
        return 2
    if settings.database_url.startswith("sqlite"):
        if args.workers > 1:
            print(
                "ivrkit: SQLite serves one process; for --workers > 1 set DATABASE_URL to "
                "PostgreSQL (postgresql+asyncpg://user@host/db)",
                file=sys.stderr,
            )
            return 2
        from ivrkit.store.sqlite import check_file_free

        try:  # the store itself refuses too; this says so before uvicorn starts
            check_file_free(settings.database_url)
        except StoreInUseError as error:
            print(f"ivrkit: {error}", file=sys.stderr)
            return 2
    base = settings.public_url or f"http://{settings.host}:{settings.port}"
    print(
        f"ivrkit: serving {len(flows)} flow(s) on http://{settings.host}:{settings.port} "
        f"(database: {settings.database_url.split('://')[0]})"
    )
    for flow in flows:
        print(
            f"  {flow.__name__}: paste into the Twilio console, Phone Numbers > your number > "
            f"'A call comes in' (Webhook, HTTP POST):\n    {base}/voice/{flow.name}"
        )
        print(f"    and 'Call status changes': {base}/voice/{flow.name}/status")
    if settings.console_token or settings.console_password_hash or settings.insecure_dev:
        print(f"  web console: {base}/console/")
    if not settings.public_url:
        print(
            "  (Twilio must reach this server: set IVRKIT_PUBLIC_URL to the https URL of your "
            "proxy or tunnel so signatures and callback URLs match)"
        )
    if settings.insecure_dev:
        print("  WARNING: signature validation is OFF (--insecure-dev)")
    os.environ[FLOWS_ENV] = os.pathsep.join(args.paths)
    if settings.insecure_dev:
        os.environ["IVRKIT_INSECURE_DEV"] = "1"
    os.environ["IVRKIT_DATABASE_URL"] = settings.database_url
    if settings.public_url:
        os.environ["IVRKIT_PUBLIC_URL"] = settings.public_url
    if settings.metrics:
        _serve_metrics(settings, args.workers)

    import uvicorn

    uvicorn.run(
        "ivrkit.cli:app_factory",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=args.workers,
        log_level=settings.log_level,
        log_config=serve_log_config(settings.log_level, settings.log_format),
        access_log=args.access_log,
        proxy_headers=False,
        http=_http_protocol(),
        # The head limit: h11 applies it itself, BoundedHeadProtocol reads it from here.
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )
    return 0


def _serve_metrics(settings: Settings, workers: int) -> None:
    """Metrics for every worker: values in files of one folder (prometheus_client's
    multiprocess mode), emptied now so an earlier run's counts do not add up with these;
    the workers learn the folder, and that metrics are on, from the environment.

    One process serving its own ``/metrics`` keeps its values in memory instead: each
    write to a file costs a webhook more than counting in memory, for nothing another
    process would read."""
    os.environ["IVRKIT_METRICS"] = "1"
    if workers <= 1 and settings.metrics_port is None:
        # Before prometheus_client is imported: it picks its mode from this at import.
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        print(f"  metrics: http://{settings.host}:{settings.port}/metrics")
        return
    from ivrkit.metrics_folder import MULTIPROC_ENV, prepare_multiprocess_dir

    folder = prepare_multiprocess_dir(os.environ.get(MULTIPROC_ENV))
    os.environ[MULTIPROC_ENV] = folder
    if settings.metrics_port is None:
        print(f"  metrics: http://{settings.host}:{settings.port}/metrics")
        return
    os.environ["IVRKIT_METRICS_PORT"] = str(settings.metrics_port)
    from prometheus_client import start_http_server

    from ivrkit.metrics import scrape_registry

    # A thread of this process (the parent of the workers, or the one server): it reads
    # the workers' files at each scrape, so it needs no app of its own.
    start_http_server(settings.metrics_port, addr=settings.host, registry=scrape_registry())
    print(f"  metrics: http://{settings.host}:{settings.metrics_port}/metrics")


def _http_protocol() -> str:
    """httptools with ivrkit's head limit, or h11 (which has its own) without httptools."""
    try:
        import ivrkit.httplimits  # noqa: F401
    except ImportError:  # pragma: no cover - uvicorn[standard] brings httptools
        return "h11"
    return "ivrkit.httplimits:BoundedHeadProtocol"


def _check(args: argparse.Namespace) -> int:
    from ivrkit.checker import run_check

    return run_check(args.paths, output=args.format)


def _cross_flow_errors(tool: str, flows: list[type[Flow]]) -> int:
    """Refuse, as ``ivrkit check`` does, flows whose sub-flows are not loaded (IVR010)."""
    missing = check_subflows(flows)
    if not missing:
        return 0
    print(
        f"ivrkit {tool}: the flows have errors; fix them or load the missing flows:",
        file=sys.stderr,
    )
    for finding in missing:
        print(f"  {finding.format()}", file=sys.stderr)
    return 2


def _graph(args: argparse.Namespace) -> int:
    from ivrkit import graph

    try:
        if args.diff:
            if args.format not in (None, "text", "mermaid"):
                print("ivrkit graph: --diff prints text or mermaid", file=sys.stderr)
                return 2
            if args.flows:
                print("ivrkit graph: --diff OLD NEW takes no other flows", file=sys.stderr)
                return 2
            sides = [graph.load_targets([spec]) for spec in args.diff]
            for _, loaded in sides:
                if _cross_flow_errors("graph", loaded):
                    return 2
            old, new = (graph.build_graph(drawn) for drawn, _ in sides)
            change = graph.diff(old, new)
            data = (change.mermaid() if args.format == "mermaid" else change.text()).encode()
        else:
            if args.format == "text":
                print(
                    "ivrkit graph: text is for --diff; draw with mermaid, dot, svg or png",
                    file=sys.stderr,
                )
                return 2
            if not args.flows:
                print(
                    "ivrkit graph: name flows (files, folders, path.py:Class) or --diff OLD NEW",
                    file=sys.stderr,
                )
                return 2
            flows, loaded = graph.load_targets(args.flows)
            if _cross_flow_errors("graph", loaded):
                return 2
            fmt = args.format or "mermaid"
            if args.traffic:
                data = _traffic(args, flows, fmt)
            else:
                data = graph.render(graph.build_graph(flows), fmt, name=flows[0].name)
    except FlowDefinitionError as error:
        print("ivrkit graph: the flow has errors; run ivrkit check:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except IvrkitError as error:
        print(f"ivrkit graph: {error}", file=sys.stderr)
        return 2
    return _output(data, args.output, binary=args.format == "png" and not args.diff)


def _traffic(args: argparse.Namespace, flows: list[type[Flow]], fmt: str) -> bytes:
    """The diagram with the event log's traffic on it (``graph --traffic``)."""
    from ivrkit.stats import funnel
    from ivrkit.traffic import render_traffic, traffic_graph

    settings = Settings.from_env(database_url=args.database_url)
    try:
        since, until = _moment(args.since), _moment(args.until)
    except ValueError as error:
        raise IvrkitError(str(error)) from None
    only = flows[0].name if len(flows) == 1 else None
    try:
        report = asyncio.run(funnel(settings.database_url, only, since, until))
    except Exception as error:  # a missing table, an unreachable server: one line
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()
        first = reason[0] if reason else type(error).__name__
        raise IvrkitError(f"cannot read the event log: {first}") from None
    return render_traffic(traffic_graph(flows, report), fmt, name=flows[0].name)


def _output(data: bytes, path: str | None, *, binary: bool = False) -> int:
    if path:
        with open(path, "wb") as file:
            file.write(data)
        print(f"ivrkit: wrote {path}", file=sys.stderr)
    elif binary:
        if sys.stdout.isatty():
            print("ivrkit: PNG is binary; write it to a file with -o FILE", file=sys.stderr)
            return 2
        sys.stdout.buffer.write(data)
    else:
        sys.stdout.write(data.decode())
    return 0


def _prompts(args: argparse.Namespace) -> int:
    from ivrkit import prompts

    try:
        flows = load_flows(args.paths)
    except FlowDefinitionError as error:
        print("ivrkit prompts: the flow has errors; run ivrkit check:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except IvrkitError as error:
        print(f"ivrkit prompts: {error}", file=sys.stderr)
        return 2
    if _cross_flow_errors("prompts", flows):
        return 2
    rows = prompts.catalogue(flows)
    text = prompts.to_json(rows) if args.format == "json" else prompts.to_csv(rows)
    _output(text.encode(), args.output)
    missing = [row for row in rows if row.missing]
    for row in missing:
        print(
            f"ivrkit prompts: {row.flow}.{row.state}: no {row.kind} in {row.missing}",
            file=sys.stderr,
        )
    return 1 if missing and args.strict else 0


def _new(args: argparse.Namespace) -> int:
    from ivrkit import scaffold

    try:
        written = scaffold.create(args.name, root=args.root)
    except (ValueError, FileExistsError) as error:
        print(f"ivrkit new: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(f"created {path}")
    print(f"next: ivrkit check {written[0]} && pytest {written[1]}")
    return 0


def _events(args: argparse.Namespace) -> int:
    from ivrkit.store import create_store

    settings = Settings.from_env(database_url=args.database_url)

    async def export() -> int:
        store = create_store(settings.database_url)
        try:
            found = await store.call_events(args.call_sid)
        finally:
            await store.close()
        for item in found:
            print(
                json.dumps(
                    {
                        "kind": "webhook" if item.kind in ("start", "action") else item.kind,
                        "event": item.kind,
                        "step": item.step,
                        "state": item.state,
                        "fired": item.fired,
                        "at": item.at.isoformat(),
                        "params": item.params,
                        "twiml": item.twiml,
                    }
                )
            )
        if not found:
            print(f"ivrkit: no events for {args.call_sid}", file=sys.stderr)
            return 1
        return 0

    return asyncio.run(export())


def _stats(args: argparse.Namespace) -> int:
    from ivrkit.stats import funnel
    from ivrkit.stats.report import FORMATS

    settings = Settings.from_env(database_url=args.database_url)
    try:
        since, until = _moment(args.since), _moment(args.until)
    except ValueError as error:
        print(f"ivrkit: {error}", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(funnel(settings.database_url, args.flow, since, until))
    except Exception as error:  # a missing table, an unreachable server: one line, no trace
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()
        first = reason[0] if reason else type(error).__name__
        print(f"ivrkit: cannot read the event log: {first}", file=sys.stderr)
        return 1
    sys.stdout.write(FORMATS[args.format](report))
    return 0


def _moment(text: str | None) -> datetime | None:
    """--since/--until: an ISO date or date-time (UTC unless it says otherwise)."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a date or date-time; use e.g. 2026-12-01 or 2026-12-01T09:30"
        ) from None
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ivrkit", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve flows to Twilio with uvicorn")
    serve.add_argument("paths", nargs="+", help="flow modules or folders of them")
    serve.add_argument("--host", default=None, help="listen address (IVRKIT_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (IVRKIT_PORT, 8000)")
    serve.add_argument(
        "--database-url", default=None, help="DATABASE_URL (default sqlite+aiosqlite:///ivrkit.db)"
    )
    serve.add_argument(
        "--public-url",
        default=None,
        help="https base URL Twilio uses to reach you (IVRKIT_PUBLIC_URL)",
    )
    serve.add_argument("--workers", type=int, default=1, help="processes (PostgreSQL only)")
    serve.add_argument(
        "--insecure-dev",
        action="store_true",
        help="DEVELOPMENT ONLY: accept webhooks without a valid signature",
    )
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.add_argument(
        "--metrics", action="store_true", help="Prometheus metrics at /metrics (IVRKIT_METRICS)"
    )
    serve.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve /metrics on this port instead of the app's (IVRKIT_METRICS_PORT)",
    )
    serve.set_defaults(handler=_serve)

    check = commands.add_parser("check", help="check flows for mistakes before they go live")
    check.add_argument("paths", nargs="+", help="flow modules or folders of them")
    check.add_argument("--format", choices=("text", "json", "github"), default="text")
    check.set_defaults(handler=_check)

    graph = commands.add_parser("graph", help="draw a flow as Mermaid, DOT, SVG or PNG")
    graph.add_argument(
        "flows",
        nargs="*",
        help="flow modules or folders, as for check; path/to/flows.py:ClassName draws one flow",
    )
    graph.add_argument(
        "--format",
        choices=("mermaid", "dot", "svg", "png", "text"),
        default=None,
        help="mermaid (default) and dot need nothing installed; svg and png need Graphviz; "
        "--diff prints text (default) or mermaid",
    )
    graph.add_argument("-o", "--output", help="write to this file instead of stdout")
    graph.add_argument(
        "--diff",
        nargs=2,
        metavar=("OLD", "NEW"),
        help="states and transitions NEW adds to and removes from OLD (text, or mermaid)",
    )
    graph.add_argument(
        "--traffic",
        action="store_true",
        help="draw how many calls took each arrow and where callers hung up (from the event log)",
    )
    graph.add_argument("--database-url", default=None, help="the event log, for --traffic")
    graph.add_argument("--since", help="--traffic: calls started at or after this UTC time")
    graph.add_argument("--until", help="--traffic: calls started before this UTC time")
    graph.set_defaults(handler=_graph)

    prompts = commands.add_parser("prompts", help="every prompt, with language and voice")
    prompts.add_argument("paths", nargs="+", help="flow modules or folders of them")
    prompts.add_argument("--format", choices=("csv", "json"), default="csv")
    prompts.add_argument("-o", "--output", help="write to this file instead of stdout")
    prompts.add_argument(
        "--strict", action="store_true", help="exit 1 when a declared language is missing"
    )
    prompts.set_defaults(handler=_prompts)

    new = commands.add_parser("new", help="write a new flow module and its test")
    new.add_argument("name", help="snake_case module name, e.g. billing_line")
    new.add_argument("--root", default=".", help="project folder holding flows/ and tests/")
    new.set_defaults(handler=_new)

    add_console_parser(commands, _serve)

    events = commands.add_parser("events", help="a call's event log as JSON lines (for replay)")
    events.add_argument("call_sid")
    events.add_argument("--database-url", default=None)
    events.set_defaults(handler=_events)

    from ivrkit.outbound import command as call_command  # ivrkit call: outbound calls

    call_command.add_parser(commands)

    from ivrkit.outbound import campaign_command  # ivrkit campaign: lists of outbound calls

    campaign_command.add_parser(commands)
    stats = commands.add_parser("stats", help="the funnel of a flow (or all) from the event log")
    stats.add_argument("flow", nargs="?", default=None, help="a flow's name (default: all flows)")
    stats.add_argument("--since", help="calls started at or after this UTC date or date-time")
    stats.add_argument("--until", help="calls started before this UTC date or date-time")
    stats.add_argument("--format", choices=("text", "json", "csv"), default="text")
    stats.add_argument("--database-url", default=None)
    stats.set_defaults(handler=_stats)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("IVRKIT_LOG_LEVEL", "INFO").upper(),
        format=LOG_FORMAT,
    )
    if os.environ.get("IVRKIT_LOG_FORMAT", "").lower() == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    return int(args.handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
