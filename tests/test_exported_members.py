"""The public API is what __all__ says, sorted, and nothing private leaks into it."""

import ivrkit


def test_all_is_sorted_and_complete():
    assert ivrkit.__all__ == sorted(ivrkit.__all__, key=lambda name: (not name.isupper(), name))
    public = {name for name in vars(ivrkit) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(ivrkit, name)).__name__ == "module"}
    assert set(ivrkit.__all__) == public - modules
