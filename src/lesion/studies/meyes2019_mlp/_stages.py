"""Meyes et al. (2019), Sections 3.1, 4.1 and 4.2: single and pairwise lesions of a shallow MLP.

`run_meyes2019_mlp` trains (or reuses) a population of 784-20-10-10 MLPs, lesions every hidden
unit singly and every pair of the first hidden layer in each network, and relates the effects
to unit attributes, pair synergy and exact tests. Its output directory::

    OUT/study.json, timings.json                    the settings; wall time per stage
    OUT/population/seed-XXX.pt, population.json     the trained networks (unless --population)
    OUT/networks/seed-XXX/results.sqlite            one resumable sweep per network
    OUT/networks/seed-XXX/attributes.csv            the network's unit attributes (cache)
    OUT/tsne-<data fingerprint>-seed<S>.npy         the t-SNE of the evaluation set (cache)
    OUT/tables/*.csv, *.parquet                     attributes, effects, pairs, correlations, spread
    OUT/figures/*.png, *.svg                        Figures 1-13 and A.1-A.4 of the paper's kinds
    OUT/summary.md                                  the paper's numbers beside ours

Everything is resumable: rerunning into OUT reuses the trained networks, finished lesions and
cached attributes and t-SNE, and recomputes the (cheap) analyses and figures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lesion._errors import LesionError, check_int
from lesion._threads import torch_threads
from lesion.data import Dataset, Split, load_dataset
from lesion.models import load_checkpoint, load_model
from lesion.plans import pairs, single
from lesion.stats import (
    ClassDropSpread,
    attribute_correlations,
    attribute_effect_table,
    class_drop_spread,
    lesion_effects,
    pair_analysis,
    ranked_pairs,
    unit_attributes,
    unit_drops,
)
from lesion.store import Run
from lesion.studies._engine import EngineConfig
from lesion.studies._study import StudyDir, StudyResult
from lesion.studies.meyes2019_mlp._report import Analysis, StudyTables, draw_figures, write_summary

MODEL = "meyes2019-mlp"
STUDY = "meyes2019-mlp"
#: The MLP's hidden layers and the post-ReLU module whose output is the unit's activation.
HIDDEN_LAYERS: dict[str, str] = {"fc1": "relu1", "fc2": "relu2"}


@dataclass(frozen=True, kw_only=True)
class Meyes2019Result(StudyResult):
    """What `run_meyes2019_mlp` produced (besides `StudyResult`'s files and timings).

    Attributes
    ----------
    networks : tuple of int
        Training seed of each network; the first is the reference network of the single-network figures.
    checkpoints, runs : tuple of Path
        Each network's checkpoint and sweep directory.
    attributes, effects, pairs, correlations : pandas.DataFrame
        Tidy tables over all networks (`unit_attributes`, `lesion_effects`, `pair_analysis`,
        `attribute_correlations` of `lesion.stats`).
    spread : ClassDropSpread
        Figure 11: per class, the std over fc1 units of the class drop, per network and averaged.
    summary : pandas.DataFrame
        The table of ``summary.md``: quantity, paper, reference network, population.
    """

    networks: tuple[int, ...]
    checkpoints: tuple[Path, ...]
    runs: tuple[Path, ...]
    attributes: pd.DataFrame
    effects: pd.DataFrame
    pairs: pd.DataFrame
    correlations: pd.DataFrame
    spread: ClassDropSpread
    summary: pd.DataFrame


def run_meyes2019_mlp(
    out: str | Path,
    *,
    data: str = "mnist",
    data_dir: str | Path | None = None,
    networks: int = 20,
    epochs: int = 100,
    population: str | Path | None = None,
    seed: int = 0,
    limit: int | None = None,
    alpha: float = 0.05,
    workers: int | None = None,
    engine: EngineConfig | None = None,
    progress: bool = False,
) -> Meyes2019Result:
    """Reproduce the 2019 MLP study: train, lesion, analyse, draw, summarise.

    Resumable: a rerun into ``out`` reuses the networks, finished sweeps and cached attributes.

    Parameters
    ----------
    out : path
        Study directory (created; rerun into it to resume).
    data : str, default="mnist"
        Dataset name (`lesion.data.load_dataset`); ``"digits"`` runs the embedded 8x8 digits in a minute.
    data_dir : path, optional
        Where the dataset files are (default ``$LESION_DATA_DIR``).
    networks : int, default=20
        Population size: seeds ``seed .. seed + networks - 1`` (or the first `networks`
        checkpoints of `population`).
    epochs : int, default=100
        Training epochs (SGD as in `lesion.train.PRESETS`); unused with `population`.
    population : path, optional
        A directory of checkpoints ``seed-*.pt`` (from `lesion.train.train_population`) to reuse.
    seed : int, default=0
        First training seed, and the seed of the t-SNE.
    limit : int, optional
        Evaluate (lesions, attributes, t-SNE) on the first `limit` test samples only; training uses all.
    alpha : float, default=0.05
        False discovery rate of the Benjamini-Hochberg correction.
    workers : int, optional
        Networks trained at once, one process and one thread each (default: one per CPU core).
    engine : EngineConfig, optional
        How the sweeps run (device, precision, memory, batch size); default `EngineConfig()`.
    progress : bool, default=False
        Progress bars on stderr.

    Returns
    -------
    Meyes2019Result
    """
    check_int("networks", networks, 1)
    check_int("epochs", epochs, 1)
    check_int("seed", seed, 0)
    if limit is not None:
        check_int("limit", limit, 10)
    workers = check_int("workers", workers if workers is not None else os.cpu_count() or 1, 1)
    if not 0 < alpha < 1:
        raise LesionError(f"alpha: expected a false discovery rate in (0, 1), got {alpha!r}")
    dataset = load_dataset(data, data_dir)
    split = dataset.test.head(limit)
    if not isinstance(split.inputs, torch.Tensor):
        raise LesionError(f"data: expected an in-memory dataset (digits, the MNIST family), got {data!r}")
    reused = None if population is None else _population_checkpoints(Path(population), networks, dataset.name)
    identity = {
        "study": STUDY, "data": data, "networks": networks, "epochs": None if reused else epochs, "seed": seed,
        "limit": limit, "alpha": alpha, "population": None if population is None else str(Path(population).resolve()),
    }
    study = StudyDir(out, STUDY, identity).claim()
    with torch_threads(1):
        return _Study(study, dataset, split, networks, epochs, seed, alpha, engine or EngineConfig(), progress).run(
            reused, workers
        )


class _Study:
    """One execution of the study; each stage is a method, timed by the `StudyDir`."""

    def __init__(
        self, study: StudyDir, dataset: Dataset, split: Split, networks: int, epochs: int, seed: int, alpha: float,
        engine: EngineConfig, progress: bool,
    ) -> None:
        self.study, self.dataset, self.split, self.networks, self.epochs = study, dataset, split, networks, epochs
        self.seed, self.alpha, self.engine, self.progress = seed, alpha, engine, progress

    def run(self, reused: list[Path] | None, workers: int) -> Meyes2019Result:
        with self.study.stage("train population", resumable=True):
            checkpoints = reused if reused is not None else self._train(workers)
        attributes: list[pd.DataFrame] = []
        effects: list[pd.DataFrame] = []
        pair_tables: list[pd.DataFrame] = []
        runs: list[Path] = []
        seeds: list[int] = []
        for path in checkpoints:
            checkpoint = load_checkpoint(path)
            network = int(checkpoint.get("config", {}).get("seed", len(seeds)))
            model = load_model(MODEL, path)
            run_dir = self.study.path("networks", f"seed-{network:03d}")
            with self.study.stage("lesion sweeps", resumable=True):
                run = self.engine.sweep(
                    model, self.split, [single(model, "fc1;fc2"), pairs(model, "fc1")], run_dir, model_name=MODEL,
                    config={"study": STUDY, "network": network}, progress=self.progress,
                )
            attributes.append(self.study.cached(
                "unit attributes", run_dir / "attributes.csv",
                partial(unit_attributes, model, self.split, layers=HIDDEN_LAYERS, initial=checkpoint.get("initial"), network=network),
                load=lambda p: pd.read_csv(p).fillna({"reference": ""}),
            ))
            with self.study.stage("effects, tests, pairs"):
                effects.append(lesion_effects(run, network=network, alpha=self.alpha))
                pair_tables.append(pair_analysis(run, network=network))
            run.close()
            runs.append(run_dir)
            seeds.append(network)
        with self.study.stage("correlations, spread"):
            analysis = self._analyse(
                pd.concat(attributes, ignore_index=True), pd.concat(effects, ignore_index=True),
                pd.concat(pair_tables, ignore_index=True), seeds[0],
            )
        embedding = self.study.cached("t-SNE", f"tsne-{self.split.fingerprint()[:16]}-seed{self.seed}.npy", self._tsne)
        with self.study.stage("figures"):
            draw_figures(self.study, analysis, Run(runs[0]), checkpoints[0], embedding, self.split)
        with self.study.stage("tables, summary"):
            self._write_tables(analysis)
            summary = write_summary(self.study, analysis, self._settings(seeds, checkpoints))
        return Meyes2019Result(
            **self.study.files(), networks=tuple(seeds), checkpoints=tuple(checkpoints), runs=tuple(runs),
            attributes=analysis.attributes, effects=analysis.tables.effects, pairs=analysis.tables.pairs,
            correlations=analysis.tables.correlations, spread=analysis.spread, summary=summary,
        )

    def _train(self, workers: int) -> list[Path]:
        from lesion.train import PRESETS, train_population

        hparams = {k: v for k, v in PRESETS[MODEL].items() if k != "epochs"}
        in_features = int(np.prod(self.dataset.test.input_shape))
        return train_population(
            MODEL, self.dataset, range(self.seed, self.seed + self.networks), self.study.path("population"),
            epochs=self.epochs, model_kwargs={"in_features": in_features}, progress=self.progress, eval_every_epoch=False,
            workers=workers, **hparams,
        )

    def _analyse(self, attributes: pd.DataFrame, effects: pd.DataFrame, pair_table: pd.DataFrame, reference: int) -> Analysis:
        correlations = attribute_correlations(attributes, effects, layers=tuple(HIDDEN_LAYERS))
        spread = class_drop_spread(unit_drops(effects, "fc1").drop(columns="layer"))
        tables = StudyTables(
            effects, pair_table, correlations, spread.population, reference, self.split.class_names, self.alpha
        )
        return Analysis(attributes, tables, spread, attribute_effect_table(attributes, effects, "fc1"))

    def _tsne(self) -> np.ndarray:
        from lesion.embed import tsne

        x = torch.as_tensor(self.split.inputs).reshape(len(self.split), -1).numpy()
        return tsne(x, seed=self.seed, perplexity=min(30.0, (len(x) - 1) / 3))

    def _write_tables(self, analysis: Analysis) -> None:
        frames = {
            "attributes": analysis.attributes,
            "effects": analysis.tables.effects,
            "pairs": analysis.tables.pairs,
            "pairs_top_negative": ranked_pairs(analysis.tables.pairs, "negative", top=20),
            "pairs_top_positive": ranked_pairs(analysis.tables.pairs, "positive", top=20),
            "correlations": analysis.tables.correlations,
            "attribute_effects_fc1": analysis.attribute_effects,
            "class_spread_per_network": analysis.spread.per_network,
            "class_spread_population": analysis.spread.population,
        }
        for name, frame in frames.items():
            self.study.write_table(name, frame)

    def _settings(self, seeds: list[int], checkpoints: list[Path]) -> dict[str, Any]:
        from lesion.train import PRESETS

        identity, preset = self.study.identity, PRESETS[MODEL]
        training = (
            f"population from {identity['population']}" if identity["population"] else
            f"{self.epochs} epochs of SGD (lr {preset['lr']}, momentum {preset['momentum']}, batch {preset['batch_size']}), "
            f"checkpoints in {self.study.path('population')}"
        )
        return {
            "data": f"{identity['data']} (evaluation on {len(self.split)} test samples)",
            "networks": f"{len(seeds)} (training seeds {seeds[0]}..{seeds[-1]}; reference network: seed {seeds[0]})",
            "training": training,
            "lesions per network": "every fc1 and fc2 unit singly, every pair of fc1 units (zero method)",
            "tests": f"exact McNemar per lesion and class (b = lost, c = gained); Benjamini-Hochberg, FDR {self.alpha:g}, one family per network",
        }


def _population_checkpoints(folder: Path, networks: int, dataset: str) -> list[Path]:
    """The first `networks` checkpoints ``seed-*.pt`` of `folder`, checked to be MLPs trained on `dataset`."""
    paths = sorted(folder.glob("seed-*.pt"))
    if not paths:
        raise LesionError(f"population: expected checkpoints seed-*.pt in {str(folder)!r}, found none")
    if len(paths) < networks:
        raise LesionError(f"networks: asked for {networks} but population {str(folder)!r} holds {len(paths)} checkpoints")
    for path in paths[:networks]:
        config = load_checkpoint(path).get("config", {})
        if config.get("model", MODEL) != MODEL or config.get("dataset", dataset) != dataset:
            raise LesionError(
                f"population: checkpoint {str(path)!r} is a {config.get('model')!r} trained on {config.get('dataset')!r}; "
                f"expected {MODEL!r} trained on {dataset!r}"
            )
    return paths[:networks]


__all__ = ["Meyes2019Result", "run_meyes2019_mlp"]
