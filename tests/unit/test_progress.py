"""Progress that moves: plain lines when output is redirected, and ticks inside engine rounds."""

from __future__ import annotations

import io

import lesion
from lesion import _progress
from lesion._progress import progress_bar
from lesion.testing import toy_data, toy_network


def test_redirected_progress_prints_plain_lines(monkeypatch) -> None:
    monkeypatch.setattr(_progress, "LINE_INTERVAL", 0.0)  # a line at every update
    stream = io.StringIO()
    with progress_bar(4, "lesions", stream=stream) as advance:
        advance.tick(0.5)
        advance(1)
        advance(3)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("lesions: 0/4 (12 %)") and "ETA" in lines[0]  # 0.5 of 4 shown
    assert lines[-1].startswith("lesions: 4/4 (100 %), in 0:00:0")


def test_ticks_and_steps_never_count_twice() -> None:
    with progress_bar(10, "x", enabled=False) as advance:
        advance.tick(3)
        assert advance.shown == 3
        advance(2)
        assert advance.shown == 3
        advance(2)
        assert advance.shown == 4
        advance.tick(100)
        assert advance.shown == 10


def test_the_fast_engine_reports_each_data_batch() -> None:
    model, data = toy_network(), toy_data()
    plan = lesion.single(model, "hidden")
    seen: list[float] = []
    outcomes = list(lesion.evaluate(model, data, plan.lesions, batch_size=2, engine="fast", on_batch=seen.append))
    batches = -(-len(data) // 2)
    assert len(outcomes) == len(plan) and len(seen) == batches
    assert sum(seen) == len(plan)  # one round of all lesions: its batches add up to the lesions
