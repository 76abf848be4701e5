"""``ivrkit campaign FLOW contacts.csv``: call a list into a flow, then write the results.

Run it again with the same contacts file (or ``--name``) to resume a stopped campaign;
run it on several hosts against one PostgreSQL database to share the work. Ctrl-C (or
SIGTERM) stops gracefully: nothing new is placed and the calls in progress are waited
for; a second Ctrl-C stops at once (those calls are followed up by the next run).
Exit status: 0 every contact done, 1 the campaign stopped (the reason is printed),
2 a mistake in the command, its files or settings, 3 contacts left for a later run.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from ivrkit.errors import ConfigError, FlowDefinitionError, IvrkitError

MACHINE_CHOICES = ("auto", "Enable", "DetectMessageEnd", "off")


def add_parser(commands: Any) -> None:
    campaign = commands.add_parser(
        "campaign", help="call every contact of a CSV file into a flow (stop and resume safe)"
    )
    campaign.add_argument("flow", help="the flow's module (path.py, or path.py:ClassName)")
    campaign.add_argument("contacts", help="CSV: a 'number' column, optional 'time_zone', data")
    campaign.add_argument(
        "--from", dest="from_", required=True, help="your Twilio number or verified caller ID"
    )
    campaign.add_argument(
        "--name", default=None, help="the campaign's name (default: flow and contacts file)"
    )
    campaign.add_argument(
        "--rate", type=float, default=1.0, help="calls per second for the account (default 1)"
    )
    campaign.add_argument(
        "--max-in-progress", type=int, default=10, help="calls at once, all runners (default 10)"
    )
    campaign.add_argument(
        "--retries", type=int, default=2, help="calls after the first when nobody was reached"
    )
    campaign.add_argument(
        "--retry-delay", type=float, default=600.0, help="seconds before a retry (default 600)"
    )
    campaign.add_argument(
        "--retry-on",
        default="busy,no-answer,failed,machine",
        help="outcomes to retry (default busy,no-answer,failed,machine)",
    )
    campaign.add_argument(
        "--hours", default="09:00-20:00", help="calling hours, callee's local time (09:00-20:00)"
    )
    campaign.add_argument(
        "--time-zone", default="UTC", help="zone of contacts without a time_zone column value"
    )
    campaign.add_argument("--do-not-call", default=None, help="file of numbers never to call")
    campaign.add_argument(
        "--results", default=None, help="results CSV (default: CONTACTS.results.csv)"
    )
    campaign.add_argument(
        "--clear-numbers", action="store_true", help="write full numbers in the results"
    )
    campaign.add_argument(
        "--result-key", default="result", help="call.data key with the flow's result"
    )
    campaign.add_argument(
        "--no-wait",
        action="store_true",
        help="end once nothing is due now (retries and closed hours wait for the next run)",
    )
    campaign.add_argument(
        "--machine-detection", choices=MACHINE_CHOICES, default="auto", help="as for ivrkit call"
    )
    campaign.add_argument("--async-amd", action="store_true", help="as for ivrkit call")
    campaign.add_argument("--database-url", default=None, help="the store the server uses")
    campaign.add_argument(
        "--public-url", default=None, help="where Twilio reaches the server (IVRKIT_PUBLIC_URL)"
    )
    campaign.add_argument(
        "--api-url", default=None, help="base URL of Twilio's REST API (the simulator's)"
    )
    campaign.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ivrkit import graph
    from ivrkit.config import Settings
    from ivrkit.outbound.calling_hours import CallingHours
    from ivrkit.outbound.campaign import CampaignSettings
    from ivrkit.outbound.contacts import ContactsError, read_contacts, read_do_not_call

    try:
        flows, _ = graph.load_targets([args.flow])
        if len(flows) > 1:
            names = ", ".join(f"{args.flow}:{flow.__name__}" for flow in flows)
            raise ConfigError(f"{args.flow} holds several flows; name one: {names}")
        settings = Settings.from_env(database_url=args.database_url, public_url=args.public_url)
        if not settings.public_url:
            raise ConfigError(
                "IVRKIT_PUBLIC_URL is not set: Twilio needs the URL where ivrkit serves the "
                "flow; set it or pass --public-url"
            )
        contacts = read_contacts(args.contacts, default_time_zone=args.time_zone)
        do_not_call = read_do_not_call(args.do_not_call) if args.do_not_call else frozenset()
        options = CampaignSettings(
            calls_per_second=args.rate,
            max_in_progress=args.max_in_progress,
            max_retries=args.retries,
            retry_delay=args.retry_delay,
            retry_on=frozenset(o.strip() for o in args.retry_on.split(",") if o.strip()),
            calling_hours=CallingHours.parse(args.hours),
            machine_detection=None
            if args.machine_detection in ("auto", "off")
            else args.machine_detection,
            result_key=args.result_key,
            wait=not args.no_wait,
        )
    except FlowDefinitionError as error:
        print("ivrkit campaign: the flow has errors; run ivrkit check:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except ContactsError as error:
        print("ivrkit campaign: fix these lines and run it again:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except (IvrkitError, ValueError, OSError) as error:
        print(f"ivrkit campaign: {error}", file=sys.stderr)
        return 2
    name = args.name or f"{flows[0].name}:{Path(args.contacts).stem}"
    results = args.results or str(Path(args.contacts).with_suffix("")) + ".results.csv"
    try:
        return asyncio.run(
            _run(args, flows[0], settings, contacts, do_not_call, options, name, results)
        )
    except IvrkitError as error:
        print(f"ivrkit campaign: {error}", file=sys.stderr)
        return 2


async def _run(
    args: argparse.Namespace,
    flow: Any,
    settings: Any,
    contacts: Any,
    do_not_call: frozenset[str],
    options: Any,
    name: str,
    results: str,
) -> int:
    import logging
    from dataclasses import replace

    from ivrkit.outbound.campaign import Campaign
    from ivrkit.outbound.campaign_store import CampaignStore
    from ivrkit.outbound.contacts import write_results
    from ivrkit.outbound.credentials import client_from_env
    from ivrkit.outbound.place import placing_store
    from ivrkit.outbound.progress import Progress
    from ivrkit.outbound.twilio_dialer import TwilioDialer

    # Alembic reports each step of opening the schema at INFO: noise between progress lines.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    client = client_from_env()
    if args.api_url:
        client.api.base_url = args.api_url.rstrip("/")
    options = replace(options, account=client.account_sid or "default")
    calls = placing_store(settings.database_url)  # SQLite: beside the server owning the file
    store = CampaignStore.from_url(settings.database_url)
    await store.open()
    await calls.open()
    try:
        dialer = TwilioDialer(
            flow,
            store=calls,
            client=client,
            public_url=settings.public_url,
            async_amd=args.async_amd,
        )
        campaign = Campaign(
            store,
            dialer,
            name=name,
            flow=flow.name,
            from_=args.from_,
            settings=options,
            do_not_call=do_not_call,
            progress=Progress(sys.stderr),
        )
        created = await campaign.load(contacts)
        print(
            f"ivrkit campaign: {'started' if created else 'resuming'} {name!r} "
            f"({len(contacts)} contacts)",
            file=sys.stderr,
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, campaign.stop)
        try:
            report = await campaign.run()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
        written = write_results(
            results, await store.results(report.campaign_id), clear_numbers=args.clear_numbers
        )
        print(f"ivrkit campaign: {written} results written to {results}", file=sys.stderr)
        if report.stop_reason:
            print(f"ivrkit campaign: stopped: {report.stop_reason}", file=sys.stderr)
            return 1
        return 0 if report.finished else 3
    finally:
        await calls.close()
        await store.close()
