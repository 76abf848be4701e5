"""The one bounded memo the webhook path uses (masking, forms, TwiML, timestamps, lines)."""

from __future__ import annotations

from ivrkit.memo import BoundedMemo


def test_it_keeps_values_until_full_then_starts_again() -> None:
    memo: BoundedMemo[str, int] = BoundedMemo(3)
    assert [memo.keep(key, n) for n, key in enumerate("abc")] == [0, 1, 2]
    assert dict(memo) == {"a": 0, "b": 1, "c": 2}
    assert memo.keep("d", 3) == 3
    assert dict(memo) == {"d": 3}  # emptied at once, never more than its size


def test_keeping_a_known_key_when_full_still_empties_it() -> None:
    memo: BoundedMemo[str, int] = BoundedMemo(1)
    memo.keep("a", 1)
    memo.keep("a", 2)
    assert dict(memo) == {"a": 2}
