"""Where prometheus_client's multiprocess mode keeps the workers' values.

Kept apart from :mod:`ivrkit.metrics` on purpose: prometheus_client decides at import time
whether values live in memory or in files of ``PROMETHEUS_MULTIPROC_DIR``, so ``ivrkit
serve`` must set that variable before anything imports it. Importing this module imports
nothing of prometheus_client.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The folder of the workers' values, if multiprocess mode is on."""
    return os.environ.get(MULTIPROC_ENV) or None


def prepare_multiprocess_dir(folder: str | None) -> str:
    """The folder the workers write their values to, emptied of a previous run's files
    (they would be added to this run's counts)."""
    path = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="ivrkit-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    return str(path)
