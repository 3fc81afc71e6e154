"""bench/http_turns.py's verdict over several rounds: each round's store against that round's
bare endpoint, the targets judged on the median of those ratios."""

from __future__ import annotations

from typing import Any


def _point(rps: float, p50: float, p99: float) -> dict[str, Any]:
    return {"rps": rps, "p50_ms": p50, "p95_ms": p99, "p99_ms": p99, "errors": 0}


def _round(bare: tuple[float, float], turns: tuple[float, float], rss: float) -> dict[str, Any]:
    return {
        "bare": {
            "rss_startup_mb": 50.0,
            "rss_after_mb": 50.0,
            "points": {"1": _point(3000, 0.3, 1.0), "50": _point(bare[0], 10, bare[1])},
        },
        "sqlite": {
            "rss_startup_mb": 137.0,
            "rss_after_mb": rss,
            "points": {"1": _point(1500, 0.6, 2.0), "50": _point(turns[0], 18, turns[1])},
        },
    }


def test_one_slow_bare_run_does_not_decide_the_verdict() -> None:
    from bench import http_turns

    rounds = [
        _round((5000, 15.0), (2500, 27.0), 150.0),  # x0.50, p99 x1.80
        _round((5000, 10.0), (2500, 33.0), 160.0),  # x0.50, p99 x3.30: a fast bare tail
        _round((6000, 16.0), (3000, 30.0), 155.0),  # x0.50, p99 x1.88
    ]
    summary = http_turns.summarise({"targets": rounds[0], "rounds": rounds})

    ratio = summary["sqlite"]["ratios"]["50"]
    assert ratio["p99_ratio_runs"] == [1.8, 3.3, 1.88]
    assert ratio["p99_ratio"] == 1.88
    assert ratio["throughput_ratio"] == 0.5
    assert summary["checks"]["sqlite_c50_p99_ratio<=2"]
    assert summary["sqlite"]["rss_after_mb"] == 160.0  # the largest round's


def test_a_single_round_is_judged_as_before() -> None:
    from bench import http_turns

    only = _round((5000, 10.0), (2500, 33.0), 150.0)
    summary = http_turns.summarise({"targets": only})

    assert summary["sqlite"]["ratios"]["50"] == {"throughput_ratio": 0.5, "p99_ratio": 3.3}
    assert not summary["checks"]["sqlite_c50_p99_ratio<=2"]
    assert summary["checks"]["sqlite_c1_p99<15ms"]
