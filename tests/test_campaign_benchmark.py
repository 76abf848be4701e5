"""benchmarks/campaign_throughput.py stays runnable, and its check holds on a small run."""

from __future__ import annotations

from benchmarks.campaign_throughput import run


async def test_a_small_campaign_benchmark_checks_and_reports(tmp_path):
    figures = await run(f"sqlite+aiosqlite:///{tmp_path / 'campaign.db'}", 40, 8)
    assert figures["contacts"] == 40
    assert sum(figures["outcomes"].values()) == 40
    assert figures["calls"] >= 40
    assert figures["statements"] > 0
    assert figures["rows"] > 0
