"""Meyes et al. (2019), Sections 3.1, 4.1 and 4.2: single and pairwise lesions of a shallow MLP.

`run_meyes2019_mlp` trains (or reuses) a population of 784-20-10-10 MLPs, lesions every hidden
unit singly and every pair of the first hidden layer in each network, and relates the effects
to unit attributes, pair synergy and exact tests. Its output directory::

    OUT/population/seed-XXX.pt, population.json     the trained networks (unless --population)
    OUT/networks/seed-XXX/results.sqlite            one resumable sweep per network
    OUT/networks/seed-XXX/attributes.csv            the network's unit attributes (cache)
    OUT/tsne-<data fingerprint>-seed<S>.npy         the t-SNE of the evaluation set (cache)
    OUT/tables/*.csv                                attributes, effects, pairs, correlations, spread
    OUT/figures/*.png, *.svg                        Figures 1-13 and A.1-A.4 of the paper's kinds
    OUT/summary.md                                  the paper's numbers beside ours

Everything is resumable: rerunning into OUT reuses the trained networks, finished lesions and
cached attributes and t-SNE, and recomputes the (cheap) analyses and figures.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lesion._errors import LesionError, check_int
from lesion._lesion import Lesion
from lesion._threads import torch_threads
from lesion.data import Dataset, Split, load_dataset
from lesion.models import load_checkpoint, load_model
from lesion.plans import pairs, single
from lesion.stats import OVERALL, ClassDropSpread, class_drop_spread
from lesion.store import Run
from lesion.studies._engine import EngineConfig
from lesion.studies.meyes2019_mlp._analysis import (
    attribute_correlations,
    attribute_effect_table,
    lesion_effects,
    pair_analysis,
    pair_parts,
    ranked_pairs,
    unit_attributes,
    unit_drops,
)
from lesion.studies.meyes2019_mlp._report import (
    LOW_DROP_PP,
    StudyTables,
    class_gain_details,
    pair_details,
    summary_markdown,
    summary_table,
)

MODEL = "meyes2019-mlp"
STUDY = "meyes2019-mlp"
FIGURE_FORMATS = ("png", "svg")


@dataclass(frozen=True)
class Meyes2019Result:
    """What `run_meyes2019_mlp` produced.

    Attributes
    ----------
    out : Path
        The study directory.
    networks : tuple of int
        Training seed of each network; the first is the reference network of the single-network figures.
    checkpoints, runs : tuple of Path
        Each network's checkpoint and sweep directory.
    attributes, effects, pairs, correlations : pandas.DataFrame
        Tidy tables over all networks (`unit_attributes`, `lesion_effects`, `pair_analysis`,
        `attribute_correlations` of `lesion.studies.meyes2019_mlp._analysis`).
    spread : ClassDropSpread
        Figure 11: per class, the std over fc1 units of the class drop, per network and averaged.
    summary : pandas.DataFrame
        The table of ``summary.md``: quantity, paper, reference network, population.
    figures : dict of str -> list of Path
        Each figure's PNG and SVG.
    tables : dict of str -> Path
        The CSV files written.
    timings : dict of str -> float
        Wall seconds per stage.
    """

    out: Path
    networks: tuple[int, ...]
    checkpoints: tuple[Path, ...]
    runs: tuple[Path, ...]
    attributes: pd.DataFrame
    effects: pd.DataFrame
    pairs: pd.DataFrame
    correlations: pd.DataFrame
    spread: ClassDropSpread
    summary: pd.DataFrame
    summary_path: Path
    figures: dict[str, list[Path]]
    tables: dict[str, Path]
    timings: dict[str, float] = field(default_factory=dict)


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
    engine: EngineConfig | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> Meyes2019Result:
    """Reproduce the 2019 MLP study: train, lesion, analyse, draw, summarise.

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
    engine : EngineConfig, optional
        How the sweeps run (device, precision, memory, batch size); default `EngineConfig()`.
    workers : int, optional
        Networks trained at once, one process and one thread each (default: one per CPU core).
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
    with torch_threads(1):
        study = _Study(Path(out), data, data_dir, networks, epochs, population, seed, limit, alpha, engine or EngineConfig(), progress)
        return study.run(workers)


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


class _Study:
    """One execution of the study; each stage is a method, timed into ``timings``."""

    def __init__(
        self, out: Path, data: str, data_dir: str | Path | None, networks: int, epochs: int,
        population: str | Path | None, seed: int, limit: int | None, alpha: float, engine: EngineConfig, progress: bool,
    ) -> None:
        self.out, self.data, self.networks, self.epochs = out, data, networks, epochs
        self.population, self.seed, self.limit, self.alpha = population, seed, limit, alpha
        self.engine, self.progress = engine, progress
        self.timings: dict[str, float] = {}
        with _timed(self.timings, "load data"):
            self.dataset: Dataset = load_dataset(data, data_dir)
            self.split: Split = self.dataset.test.head(limit)
        if not isinstance(self.split.inputs, torch.Tensor):
            raise LesionError(f"data: expected an in-memory dataset (digits, the MNIST family), got {data!r}")

    def run(self, workers: int) -> Meyes2019Result:
        with _timed(self.timings, "train population"):
            checkpoints = self._checkpoints(workers)
        attributes: list[pd.DataFrame] = []
        effects: list[pd.DataFrame] = []
        pair_tables: list[pd.DataFrame] = []
        runs: list[Path] = []
        seeds: list[int] = []
        for path in checkpoints:
            checkpoint = load_checkpoint(path)
            network = int(checkpoint.get("config", {}).get("seed", len(seeds)))
            model = load_model(MODEL, path)
            run_dir = self.out / "networks" / f"seed-{network:03d}"
            with _timed(self.timings, "lesion sweeps"):
                run = self.engine.sweep(
                    model, self.split, [single(model, "fc1;fc2"), pairs(model, "fc1")], run_dir, model_name=MODEL,
                    config={"study": STUDY, "network": network}, progress=self.progress,
                )
            with _timed(self.timings, "unit attributes"):
                attributes.append(self._attributes(model, checkpoint, network, run_dir))
            with _timed(self.timings, "effects, tests, pairs"):
                effects.append(lesion_effects(run, network=network, alpha=self.alpha))
                pair_tables.append(pair_analysis(run, network=network))
            run.close()
            runs.append(run_dir)
            seeds.append(network)
        with _timed(self.timings, "correlations, spread"):
            analysis = self._analyse(
                pd.concat(attributes, ignore_index=True), pd.concat(effects, ignore_index=True),
                pd.concat(pair_tables, ignore_index=True), seeds[0],
            )
        with _timed(self.timings, "t-SNE"):
            embedding = self._tsne()
        with _timed(self.timings, "figures"):
            figures = _Figures(self, analysis, Run(runs[0]), checkpoints[0], embedding).draw()
        with _timed(self.timings, "tables, summary"):
            tables = self._write_tables(analysis)
            summary = summary_table(analysis.tables)
            details = {
                f"Largest class gains of single-unit lesions (network seed {seeds[0]})": class_gain_details(analysis.tables),
                f"Most super-additive damage, fc1 pairs (network seed {seeds[0]})": pair_details(analysis.tables, "negative"),
                f"Most super-additive gains, fc1 pairs (network seed {seeds[0]})": pair_details(analysis.tables, "positive"),
            }
            summary_path = self._write_summary(summary, seeds, figures, tables, details)
        return Meyes2019Result(
            self.out, tuple(seeds), tuple(checkpoints), tuple(runs), analysis.attributes,
            analysis.tables.effects, analysis.tables.pairs, analysis.tables.correlations, analysis.spread,
            summary, summary_path, figures, tables, dict(self.timings),
        )

    def _checkpoints(self, workers: int) -> list[Path]:
        if self.population is not None:
            return _population_checkpoints(Path(self.population), self.networks, self.dataset.name)
        from lesion.train import PRESETS, train_population

        hparams = {k: v for k, v in PRESETS[MODEL].items() if k != "epochs"}
        in_features = int(np.prod(self.dataset.test.input_shape))
        return train_population(
            MODEL, self.dataset, range(self.seed, self.seed + self.networks), self.out / "population",
            epochs=self.epochs, model_kwargs={"in_features": in_features}, progress=self.progress, eval_every_epoch=False,
            workers=workers, **hparams,
        )

    def _attributes(self, model: torch.nn.Module, checkpoint: dict[str, Any], network: int, run_dir: Path) -> pd.DataFrame:
        cache = run_dir / "attributes.csv"
        if cache.is_file():
            return pd.read_csv(cache).fillna({"reference": ""})
        table = unit_attributes(model, self.split, initial=checkpoint.get("initial"), network=network)
        _atomic_csv(table, cache)
        return table

    def _analyse(self, attributes: pd.DataFrame, effects: pd.DataFrame, pair_table: pd.DataFrame, reference: int) -> _Analysis:
        correlations = attribute_correlations(attributes, effects)
        spread = class_drop_spread(unit_drops(effects, "fc1").drop(columns="layer"))
        tables = StudyTables(
            effects, pair_table, correlations, spread.population, reference, self.split.class_names, self.alpha
        )
        return _Analysis(attributes, tables, spread, attribute_effect_table(attributes, effects, "fc1"))

    def _tsne(self) -> np.ndarray:
        from lesion.embed import tsne

        path = self.out / f"tsne-{self.split.fingerprint()[:16]}-seed{self.seed}.npy"
        if path.is_file():
            return np.load(path)
        inputs = self.split.inputs
        if not isinstance(inputs, torch.Tensor):  # checked in __init__; narrows the type
            raise LesionError(f"data: expected an in-memory dataset, got {self.data!r}")
        x = inputs.reshape(len(self.split), -1).numpy()
        embedding = tsne(x, seed=self.seed, perplexity=min(30.0, (len(x) - 1) / 3))
        tmp = path.with_name(path.name + ".tmp.npy")
        np.save(tmp, embedding)
        os.replace(tmp, path)
        return embedding

    def _write_tables(self, analysis: _Analysis) -> dict[str, Path]:
        folder = self.out / "tables"
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
        paths = {}
        for name, frame in frames.items():
            paths[name] = folder / f"{name}.csv"
            _atomic_csv(frame, paths[name])
        return paths

    def _write_summary(
        self, summary: pd.DataFrame, seeds: list[int], figures: dict[str, list[Path]], tables: dict[str, Path],
        details: dict[str, pd.DataFrame],
    ) -> Path:
        settings = {
            "data": f"{self.data} (evaluation on {len(self.split)} test samples)",
            "networks": f"{len(seeds)} (training seeds {seeds[0]}..{seeds[-1]}; reference network: seed {seeds[0]})",
            "training": f"population from {self.population}" if self.population else _training_text(self.out, self.epochs),
            "lesions per network": "every fc1 and fc2 unit singly, every pair of fc1 units (zero method)",
            "tests": f"exact McNemar per lesion and class (b = lost, c = gained); Benjamini-Hochberg, FDR {self.alpha:g}, one family per network",
        }
        timings = {**self.timings, "total": sum(self.timings.values())}
        rel = {name: [str(p.relative_to(self.out)) for p in paths] for name, paths in figures.items()}
        text = summary_markdown(
            summary, settings=settings, timings=timings, figures=rel,
            tables={name: str(p.relative_to(self.out)) for name, p in tables.items()}, details=details,
        )
        path = self.out / "summary.md"
        path.write_text(text)
        return path


def _training_text(out: Path, epochs: int) -> str:
    from lesion.train import PRESETS

    preset = PRESETS[MODEL]
    return (
        f"{epochs} epochs of SGD (lr {preset['lr']}, momentum {preset['momentum']}, batch {preset['batch_size']}), "
        f"checkpoints in {out / 'population'}"
    )


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


def _atomic_csv(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


@dataclass(frozen=True)
class _Analysis:
    attributes: pd.DataFrame
    tables: StudyTables
    spread: ClassDropSpread
    attribute_effects: pd.DataFrame


class _Figures:
    """The paper's figures for the reference network (single lesions, pairs) and the population."""

    def __init__(self, study: _Study, analysis: _Analysis, run: Run, checkpoint: Path, embedding: np.ndarray) -> None:
        self.study, self.analysis, self.run, self.checkpoint, self.embedding = study, analysis, run, checkpoint, embedding
        tables = analysis.tables
        self.network = tables.reference_network
        self.effects = tables.effects[tables.effects["network"] == self.network]
        self.pairs = tables.pairs[tables.pairs["network"] == self.network]
        self.written: dict[str, list[Path]] = {}

    def draw(self) -> dict[str, list[Path]]:
        from lesion.plots._mlp import EmbeddingView

        try:
            drops = unit_drops(self.effects, "fc1")
            overall = drops[drops["class"] == OVERALL].sort_values("drop", ascending=False, kind="stable")
            units = [f"fc1:{u}" for u in overall["unit"]]
            largest, second, smallest = units[0], units[1], units[-1]
            selective = self._selective_unit(drops, exclude=largest)
            gain = drops[drops["class"] >= 0].sort_values("change_pp", ascending=False, kind="stable").iloc[0]
            low = overall[overall["drop"] < LOW_DROP_PP]
            low_units = [f"fc1:{u}" for u in (low if len(low) else overall.tail(4))["unit"].head(4)]
            negative = ranked_pairs(self.pairs, "negative", top=1, overall=True)
            positive = self._positive_pair()

            self._save("fig01-tsne", EmbeddingView.from_run(self.run, self.embedding).plot().figure_, self._title(1))
            self._outcomes("fig02-intact", ["intact"], 2)
            self._outcomes("fig03-largest-drop", [largest], 3)
            self._outcomes("figA1-second-largest-drop", [second], "A.1")
            self._outcomes("fig04-selective-unit", [selective], 4)
            self._outcomes("fig05-smallest-drop", [smallest], 5)
            self._outcomes("figA2-low-drop-units", low_units, "A.2")
            self._outcomes("fig06-median-drop", [units[len(units) // 2]], 6)
            self._outcomes("fig07-largest-class-gain", [f"fc1:{int(gain['unit'])}"], 7)
            self._weight_maps()
            self._population_figures()
            pair = negative["lesion"].iloc[0] if len(negative) else self.pairs["lesion"].iloc[0]
            self._outcomes("fig12-negative-synergy-pair", [pair], 12)
            self._outcomes("fig13-positive-synergy-pair", [positive], 13)
            self._outcomes("figA3-pair-of-fig3-fig4-units", [_pair_key(largest, selective)], "A.3")
            self._outcomes("figA4-singles-of-fig13-pair", list(pair_parts(positive)), "A.4", embedding=False)
        finally:
            self.run.close()
        return self.written

    def _selective_unit(self, drops: pd.DataFrame, exclude: str) -> str:
        """Fig. 4: the fc1 unit whose lesion hits one class hardest relative to the others.

        Score: the largest class drop minus the mean drop of the other classes (pp).
        """
        per_class = drops[drops["class"] >= 0].pivot(index="unit", columns="class", values="drop")
        top = per_class.max(axis=1)
        score = top - (per_class.sum(axis=1) - top) / (per_class.shape[1] - 1)
        ranked = [f"fc1:{u}" for u in score.sort_values(ascending=False, kind="stable").index]
        return next(u for u in ranked if u != exclude)

    def _positive_pair(self) -> str:
        """Fig. 13: the pair whose class gain most exceeds its singles' (else the largest class synergy)."""
        top = ranked_pairs(self.pairs, "positive", top=1)
        if len(top):
            return str(top["lesion"].iloc[0])
        rows = self.pairs[self.pairs["class"] >= 0]
        return str(rows.loc[rows["synergy"].idxmax(), "lesion"])

    def _outcomes(self, name: str, lesions: list[str], figure: int | str, embedding: bool = True) -> None:
        import matplotlib.pyplot as plt

        from lesion.plots._mlp import LesionOutcomeView

        panels = 2 if embedding else 1
        rows, cols = (len(lesions), panels) if embedding else (1, len(lesions))
        fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 3.9 * rows), squeeze=False)
        for i, key in enumerate(lesions):
            view = LesionOutcomeView.from_run(self.run, key, self.embedding if embedding else None, self.effects)
            view.plot(axes[i] if embedding else axes[0, i])
        self._save(name, fig, self._title(figure) + " (units 0-based)")

    def _weight_maps(self) -> None:
        from lesion.plots._mlp import WeightMaps

        checkpoint = load_checkpoint(self.checkpoint)
        trained = checkpoint["trained"]["fc1.weight"]
        initial = checkpoint.get("initial", {}).get("fc1.weight")
        attrs = self.analysis.attributes
        p = attrs[(attrs["network"] == self.network) & (attrs["layer"] == "fc1") & (attrs["attribute"] == "mw_p")]
        shape = self.study.split.input_shape
        fan_in = int(trained.shape[1])
        image = (int(shape[-2]), int(shape[-1])) if len(shape) >= 2 and shape[-2] * shape[-1] == fan_in else (1, fan_in)
        view = WeightMaps.from_weights(trained, p.sort_values("unit")["value"], image, initial=initial).plot()
        self._save("fig08-weight-maps", view.figure_)

    def _population_figures(self) -> None:
        from lesion.plots._mlp import AttributeDropScatter, ClassSpreadLines, CoefficientDensity

        table = self.analysis.attribute_effects
        scatter = AttributeDropScatter.from_table(table, "mw_p", self.network).plot()
        self._save("fig09-pvalue-vs-drop", scatter.figure_, self._title(9, population=True))
        c = self.analysis.tables.correlations
        rows = c[(c["layer"] == "fc1") & (c["attribute"] == "mw_p") & (c["class"] == OVERALL)]
        self._save("fig10-coefficient-density", CoefficientDensity.from_table(rows, "mw_p").plot().figure_, self._title(10, population=True))
        lines = ClassSpreadLines.from_spread(self.analysis.spread, self.study.split.class_names).plot()
        self._save("fig11-class-spread", lines.figure_, self._title(11, population=True))

    def _title(self, figure: int | str, population: bool = False) -> str:
        who = f"{self.analysis.tables.effects['network'].nunique()} networks" if population else f"network seed {self.network}"
        return f"Meyes et al. 2019, Fig. {figure} analogue: {who}"

    def _save(self, name: str, fig: Any, title: str | None = None) -> None:
        """Write `fig` as PNG and SVG (with `title` above its panels, if given) and close it."""
        import matplotlib.pyplot as plt

        from lesion.plots import save_figure

        if title is not None:
            fig.suptitle(title, fontsize="medium")
        fig.tight_layout()
        self.written[name] = save_figure(fig, self.study.out / "figures" / name, FIGURE_FORMATS)
        plt.close(fig)


def _pair_key(a: str, b: str) -> str:
    """The two-unit lesion key of two single-unit keys of one layer."""
    (layer_a, (u,)), (layer_b, (v,)) = Lesion.from_key(a).units[0], Lesion.from_key(b).units[0]
    if layer_a != layer_b:
        raise LesionError(f"expected two units of one layer, got {a!r} and {b!r}")
    return Lesion(((layer_a, tuple(sorted((u, v)))),)).key


__all__ = ["Meyes2019Result", "run_meyes2019_mlp"]
