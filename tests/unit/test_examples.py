"""Every study file of examples/ runs, at a tiny size; the digits example is the demo."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

import lesion
from fixtures.regression import fake_mnist_family
from lesion.studies.demo import demo_settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def tiny(settings: dict, data_dir: Path) -> dict:
    """The example with one training epoch, a few samples and draws, narrow convolutions, synthetic files."""
    settings = {**settings, "model": {**settings["model"]}, "data": {**settings.get("data", {})}}
    settings["model"]["train"] = {**settings["model"].get("train", {}), "epochs": 1}
    settings["data"] = {**settings["data"], "limit": 60, "subset": None, "dir": str(data_dir)}
    if settings["model"]["name"] == "meyes2020-cnn":
        settings["model"]["args"] = {"width": 4}
    settings["plans"] = [{**plan, "draws": 2} if plan["kind"] == "fraction" else plan for plan in settings["plans"]]
    return settings


def test_the_digits_example_is_the_demo():
    assert tomllib.loads((EXAMPLES / "digits.toml").read_text()) == demo_settings()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.toml")))
def test_every_example_runs_at_a_tiny_size(name, tmp_path):
    data_dir = fake_mnist_family(tmp_path / "data", "fashion-mnist", n_test=60, n_train=100)
    settings = tiny(tomllib.loads((EXAMPLES / name).read_text()), data_dir)
    result = lesion.run_study(settings, tmp_path / "out", root=EXAMPLES)
    assert result.summary_path is not None and "Intact network: top-1" in result.summary_path.read_text()
    assert "effects" in result.analyses and result.figures and not result.notes
    assert (tmp_path / "out" / "model.pt").is_file()
