"""Digits from speech are ASCII digits: ``"²".isdigit()`` and ``"٣".isdigit()`` are true."""

from __future__ import annotations

from ivrkit.inputs import spoken_digits


def test_words_and_ascii_figures_become_digits() -> None:
    assert spoken_digits("one two 3 4") == "1234"


def test_other_scripts_digits_and_superscripts_are_not_digits() -> None:
    assert spoken_digits("² ٣ 5") == "5"
