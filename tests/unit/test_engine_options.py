"""`EngineOptions`: validated when built, the same results as the keywords, and nothing written on a bad one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import lesion
from lesion import LesionError
from lesion.engine import EngineOptions
from lesion.testing import toy_data, toy_network


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"engine": "fsat"}, "engine: expected one of .*closest: 'fast'"),
        ({"batch_size": 0}, "batch_size: expected an integer >= 1, got 0 \\(closest valid: 1\\)"),
        ({"memory": 0}, "memory: expected an integer >= 1 bytes"),
        ({"autocast": "fp61"}, "autocast must be one of"),
        ({"device": "tpu"}, "device: expected one of"),
        ({"float32_check": -1}, "float32_check: expected an integer >= 0"),
        ({"compile": "yes"}, "compile: expected True or False"),
    ],
)
def test_bad_settings_are_refused_when_built(settings: dict, message: str) -> None:
    with pytest.raises(LesionError, match=message):
        EngineOptions(**settings)


def test_options_give_the_keywords_results_and_do_not_mix() -> None:
    model, data = toy_network(), toy_data()
    lesions = lesion.single(model, "hidden").lesions
    by_keywords = {o.lesion.key: o.topk for o in lesion.evaluate(model, data, lesions, batch_size=3, engine="reference")}
    options = EngineOptions(batch_size=3, engine="fast")
    by_options = {o.lesion.key: o.topk for o in lesion.evaluate(model, data, lesions, options=options)}
    assert by_keywords.keys() == by_options.keys()
    assert all(np.array_equal(by_keywords[key], by_options[key]) for key in by_keywords)
    with pytest.raises(LesionError, match="either as options= or as keywords"):
        lesion.evaluate(model, data, lesions, options=options, batch_size=7)


@pytest.mark.parametrize("settings", [{"memory": 0}, {"batch_size": 0}, {"engine": "turbo"}, {"float32_check": -2}])
def test_a_bad_setting_leaves_no_run_behind(tmp_path: Path, settings: dict) -> None:
    model, data = toy_network(), toy_data()
    with pytest.raises(LesionError):
        lesion.sweep(model, data, lesion.single(model, "hidden"), tmp_path / "run", **settings)
    assert not (tmp_path / "run").exists()
