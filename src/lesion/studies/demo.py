"""`lesion demo`: a complete small lesion study on scikit-learn's digits in under a minute."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lesion._sweep import sweep
from lesion._threads import torch_threads
from lesion.data import digits
from lesion.models import load_model
from lesion.plans import pairs, single
from lesion.plots import ClassOutcomeBars, save_figure
from lesion.report._summary import RunSummary, run_summary
from lesion.store import Run

DEMO_MODEL = "meyes2019-mlp"
DEMO_KWARGS: dict[str, Any] = {"in_features": 64}


@dataclass(frozen=True)
class DemoResult:
    run: Run
    summary: RunSummary
    figures: list[Path]


def run_demo(out: str | Path, *, seed: int = 0, epochs: int = 30, progress: bool = False) -> DemoResult:
    """Train the 64-20-10-10 MLP on digits, lesion every hidden unit and every fc1 pair, summarise, draw.

    The run directory ``out`` holds ``results.sqlite``, ``model.pt`` (initial and trained weights)
    and ``figures/*.png``. Rerunning into it resumes and reuses the trained network. The network
    is tiny, so everything runs on one thread (several threads only add synchronisation).
    """
    with torch_threads(1):
        return _run_demo(Path(out), seed, epochs, progress)


def _run_demo(out: Path, seed: int, epochs: int, progress: bool) -> DemoResult:
    from lesion.train import train_model

    data = digits()
    checkpoint_path = out / "model.pt"
    if checkpoint_path.is_file():
        model = load_model(checkpoint=checkpoint_path)
        checkpoint = None
    else:
        checkpoint = train_model(
            DEMO_MODEL, data, seed=seed, epochs=epochs, lr=0.05, momentum=0.9, batch_size=32,
            model_kwargs=DEMO_KWARGS, progress=progress,
        )
        model = load_model(DEMO_MODEL, **DEMO_KWARGS)
        model.load_state_dict(checkpoint["trained"])
    plans = [single(model, "fc1;fc2"), pairs(model, "fc1")]
    run = sweep(
        model, data.test, plans, out, model_name=DEMO_MODEL,
        config={"study": "demo", "seed": seed, "epochs": epochs}, progress=progress,
    )
    if checkpoint is not None:
        torch.save(checkpoint, checkpoint_path)
    summary = run_summary(run, plan="single")
    figures = []
    worst = summary.drops["lesion"].iloc[0]
    for key in ("intact", worst):
        bars = ClassOutcomeBars.from_run(run, key).plot()
        figures += save_figure(bars.figure_, out / "figures" / f"bars-{key.replace(':', '-')}")
        import matplotlib.pyplot as plt

        plt.close(bars.figure_)
    return DemoResult(run, summary, figures)
