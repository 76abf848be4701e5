"""The simulator's form encoder stays right when its memo of quoted texts fills up."""

from __future__ import annotations

from urllib.parse import urlencode

from simulator.transport import encode_form


def test_thousands_of_distinct_values_encode_like_urlencode() -> None:
    # Before: the memo emptied itself between a name and its value, and the name was lost
    # (KeyError after about 8,192 distinct texts, i.e. in any long load run).
    for n in range(10_000):
        params = {"CallSid": f"CA{n:032x}", "RecordingUrl": f"https://x.test/rec/{n} a&b"}
        assert encode_form(params) == urlencode(params)
