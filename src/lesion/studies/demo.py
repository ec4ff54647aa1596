"""`lesion demo`: the digits study of ``examples/digits.toml``, from code (no file, no download)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lesion._threads import torch_threads
from lesion.studies.custom import CustomStudyResult, run_study


def demo_settings(seed: int = 0, epochs: int = 30) -> dict[str, Any]:
    """The study file of the demo as a dict (``examples/digits.toml`` with the defaults)."""
    return {
        "name": "digits",
        "seed": seed,
        "model": {
            "name": "meyes2019-mlp",
            "args": {"in_features": 64},
            "train": {"epochs": epochs, "lr": 0.05, "momentum": 0.9, "batch_size": 32},
        },
        "data": {"name": "digits"},
        "plans": [{"kind": "single", "layers": "fc1;fc2"}, {"kind": "pairs", "layers": "fc1"}],
        "analyses": {"attributes": True, "correlations": True, "activations": {"fc1": "relu1", "fc2": "relu2"}},
        "report": {"plan": "single"},
    }


def run_demo(out: str | Path, *, seed: int = 0, epochs: int = 30, progress: bool = False) -> CustomStudyResult:
    """Train the 64-20-10-10 MLP on digits, lesion every hidden unit and every fc1 pair, analyse, draw, summarise.

    ``out`` becomes a study directory (``lesions/``, ``model.pt``, ``tables/``, ``figures/``,
    ``summary.md``); rerunning into it resumes and reuses the trained network. The network is
    tiny, so everything runs on one thread (several threads only add synchronisation).
    """
    with torch_threads(1):
        return run_study(demo_settings(seed, epochs), out, progress=progress)
