"""A bounded memo: what the webhook path computes again and again, remembered up to a size.

Phone numbers, form fields, rendered TwiML and timestamps repeat across a call's webhooks.
Each memo forgets everything at once when full instead of evicting one entry at a time:
a hit then costs one dict look-up, and the values in use come back within a few webhooks.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedMemo(dict[K, V], Generic[K, V]):
    """A dict emptied whenever it holds ``size`` entries and a new one is kept."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def keep(self, key: K, value: V) -> V:
        """Remember ``value`` under ``key`` and return it."""
        if len(self) >= self.size:
            self.clear()
        self[key] = value
        return value
