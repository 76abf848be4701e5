"""The public API is what __all__ says, sorted, and nothing private leaks into it."""

import pytest

import ivrkit


def test_all_is_sorted_and_complete():
    assert ivrkit.__all__ == sorted(ivrkit.__all__, key=lambda name: (not name.isupper(), name))
    public = {name for name in vars(ivrkit) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(ivrkit, name)).__name__ == "module"}
    assert set(ivrkit.__all__) == public - modules


def test_one_public_name_per_concept():
    assert "Hangup" in ivrkit.__all__
    assert "End" not in ivrkit.__all__
    assert "Decision" not in ivrkit.__all__  # only @decision makes one
    assert not hasattr(ivrkit, "Decision")


def test_end_still_imports_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="ivrkit.End is deprecated .* use Hangup"):
        from ivrkit import End
    assert End is ivrkit.Hangup


def test_unknown_names_still_raise_attribute_error():
    with pytest.raises(AttributeError, match="module 'ivrkit' has no attribute 'Hangp'"):
        ivrkit.Hangp  # noqa: B018
