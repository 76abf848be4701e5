"""CPU per webhook of the access line and of metrics, called in a loop (no HTTP, no store).

Prints microseconds of CPU for: one access line at INFO (text and JSON, to /dev/null),
``Metrics.webhook`` (plain, a call started, a call ended), the store timing wrapper
around a session that does nothing, and one scrape. Set PROMETHEUS_MULTIPROC_DIR to an
empty folder to measure the multiprocess mode (values in files).

    python benchmarks/observability_cost.py [--n 30000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.config
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("IVRKIT_SECRET_KEY", "benchmark-only-key-never-used-in-production")


def cpu_us(action: Callable[[], Any], n: int) -> float:
    started = time.process_time()
    for _ in range(n):
        action()
    return (time.process_time() - started) / n * 1e6


class NoSession:
    async def __aenter__(self) -> NoSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class NoStore:
    def session(self, call_sid: str) -> NoSession:
        return NoSession()


async def sessions(store: Any, n: int) -> float:
    started = time.process_time()
    for _ in range(n):
        async with store.session("CA1"):
            pass
    return (time.process_time() - started) / n * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30000)
    n = parser.parse_args().n
    from flows.support_line import SupportLine
    from ivrkit import logs
    from ivrkit.cli import serve_log_config
    from ivrkit.metrics import Metrics, TimedStore
    from ivrkit.outcome import Note

    note = Note("support_line", "action")
    note.call_sid, note.state, note.step = "CA" + "1" * 32, "main_menu", "2"
    for log_format in ("text", "json"):
        config: dict[str, Any] = serve_log_config("info", log_format)
        config["handlers"] = {
            "stderr": {
                "class": "logging.FileHandler",
                "formatter": "ivrkit",
                "filename": os.devnull,
            }
        }
        logging.config.dictConfig(config)
        line = cpu_us(lambda: logs.access_line(note, "POST", "/voice/x", 200, 0.0123), n)
        print(f"access line ({log_format}): {line:6.2f} us")
    metrics = Metrics([SupportLine])
    started, ended = Note("support_line", "incoming"), Note("support_line", "status")
    started.started, ended.ended = True, "completed"
    mode = "multiprocess" if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else "in memory"
    print(f"metrics ({mode}):")
    print(f"  webhook: {cpu_us(lambda: metrics.webhook(note, 0.0123), n):6.2f} us")
    print(f"  webhook, call started: {cpu_us(lambda: metrics.webhook(started, 0.01), n):6.2f} us")
    print(f"  webhook, call ended: {cpu_us(lambda: metrics.webhook(ended, 0.01), n):6.2f} us")
    timed = asyncio.run(sessions(TimedStore(NoStore(), metrics), n))
    plain = asyncio.run(sessions(NoStore(), n))
    print(f"  store timing of a session: {timed - plain:6.2f} us")
    print(f"  one scrape: {cpu_us(metrics.exposition, 200):6.0f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
