"""Kept for imports written before the rules moved to :mod:`ivrkit.rules` (by family)."""

from __future__ import annotations

from ivrkit.rules import (
    ERROR,
    MAX_SENSIBLE_RETRIES,
    RULES,
    WARNING,
    Finding,
    check_flow,
    check_subflows,
    did_you_mean,
    relative_path,
)

__all__ = [
    "ERROR",
    "MAX_SENSIBLE_RETRIES",
    "RULES",
    "WARNING",
    "Finding",
    "check_flow",
    "check_subflows",
    "did_you_mean",
    "relative_path",
]
