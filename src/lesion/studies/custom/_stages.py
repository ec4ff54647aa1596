"""`run_study`: a study of any model from a study file (``lesion run STUDY.toml``), on the study scaffold.

The study directory holds ``study.json`` (the checked file's model, data, plans and seed),
``model.pt`` (when trained here), ``lesions/`` (the resumable sweep), ``tables/``,
``figures/``, ``timings.json`` and ``summary.md``; rerunning the same file resumes it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from lesion._errors import LesionError
from lesion.data import Dataset, Split, load_dataset
from lesion.models import build_model, load_checkpoint, load_model
from lesion.plans import Plan, cumulative, fraction, pairs, single
from lesion.report import RunSummary, run_summary
from lesion.stats import (
    attribute_correlations,
    attributes_wide,
    layer_effects,
    lesion_effects,
    pair_analysis,
    unit_ablation_selectivity,
    unit_attributes,
)
from lesion.store import Run
from lesion.studies._engine import on_device
from lesion.studies._study import StudyDir, StudyResult
from lesion.studies.custom._config import (
    CumulativePlan,
    FractionPlan,
    PairsPlan,
    SinglePlan,
    StudyFile,
    load_study_file,
    plan_name,
)
from lesion.studies.custom._report import draw_figures, write_summary
from lesion.train import seeded_subset

STUDY = "study file"


@dataclass(frozen=True, kw_only=True)
class CustomStudyResult(StudyResult):
    """What a study file produced (besides `StudyResult`'s files and timings).

    Attributes
    ----------
    spec : StudyFile
        The checked study file.
    run : Run
        The sweep (``out/lesions``).
    summary : RunSummary
        Intact accuracy, the most damaging lesions, the largest class gain.
    analyses : dict of str -> DataFrame
        Each analysis's tidy table, by table name (also under ``out/tables``).
    notes : list of str
        Analyses skipped, and why.
    """

    spec: StudyFile
    run: Run
    summary: RunSummary
    analyses: dict[str, pd.DataFrame]
    notes: list[str]


def run_study(
    source: str | Path | Mapping[str, Any], out: str | Path | None = None, *, root: str | Path | None = None,
    engine: Mapping[str, Any] | None = None, progress: bool = False,
) -> CustomStudyResult:
    """Run (or resume) the study of a study file (a TOML path) or of its settings as a mapping.

    Parameters
    ----------
    source : path or mapping
        ``STUDY.toml``, or the same settings as a dict.
    out : path, optional
        The study directory; default ``runs/<name>``.
    root : path, optional
        Where relative paths and ``module:function`` names of a mapping start from (default: the
        working directory; for a file: its folder).
    engine : mapping, optional
        ``[engine]`` settings that replace the file's (``{"device": "cuda"}``).
    progress : bool, default=False

    Nothing is written before the file validates and its model, data and plans load.
    """
    spec, base = load_study_file(source, engine)
    base = Path(root) if root is not None and isinstance(source, Mapping) else base
    with _importable(base):
        return _run(spec, base, Path(out) if out is not None else Path("runs") / spec.name, progress)


def _run(spec: StudyFile, base: Path, out: Path, progress: bool) -> CustomStudyResult:
    dataset = _dataset(spec, base)
    split = seeded_subset(dataset.test.head(spec.data.limit), spec.data.subset, spec.seed)
    model, initial = _model(spec, base) if spec.model.train is None else (build_model(spec.model.name or "", **spec.model.args), None)
    _plans(spec, model, split)  # the layers and settings are checked before anything is written
    identity = spec.model_dump(mode="json", include={"name", "seed", "model", "data", "plans"})
    study = StudyDir(out, STUDY, identity).claim()
    if spec.model.train is not None:
        checkpoint = study.cached("train", "model.pt", lambda: _train(spec, dataset))
        model, initial = load_model(checkpoint=study.path("model.pt")), checkpoint.get("initial")
    model.eval()
    plans = _plans(spec, model, split)
    with study.stage("sweep", resumable=True):
        run = spec.engine.sweep(
            model, split, plans, study.path("lesions"), model_name=spec.model.name or str(spec.model.checkpoint),
            config={"study": spec.name, "seed": spec.seed}, progress=progress,
        )
    with study.stage("analyses"):
        tables, notes = _analyses(spec, model, split, run, initial)
    if spec.analyses.shapley is not None:
        with study.stage("shapley", resumable=True):
            tables.update(_shapley(spec, model, split, study.path("shapley"), progress))
    if spec.analyses.improve is not None:
        if dataset.train is None:
            notes.append(f"improve skipped: data {spec.data.name!r} has no training split to choose on")
        else:
            with study.stage("improve", resumable=True):
                tables.update(_improve(spec, model, dataset.train, split, study.path("improve"), progress))
    for name, frame in tables.items():
        study.write_table(name, frame)
    summary = run_summary(run, top=spec.report.top, plan=spec.report.plan)
    embedding = None
    if spec.analyses.embedding is not None:
        embedding = study.cached(
            "embedding", f"embedding-{spec.analyses.embedding}-seed{spec.seed}.npy", lambda: _embed(spec, split)
        )
    if spec.report.figures:
        with study.stage("figures"):
            draw_figures(study, run, summary, tables, embedding)
    if spec.report.summary:
        write_summary(study, spec, run, summary, notes)
    result = CustomStudyResult(out=study.out, spec=spec, run=run, summary=summary, analyses=tables, notes=notes)
    return replace(result, **study.files())


@contextmanager
def _importable(folder: Path) -> Iterator[None]:
    """Modules beside the study file import (``my_model:build``) while it runs."""
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))


def _path(base: Path, path: Path | None) -> Path | None:
    return None if path is None else (path if path.is_absolute() else base / path)


def _dataset(spec: StudyFile, base: Path) -> Dataset:
    """The data section's dataset (its train split only when the model trains here)."""
    data = spec.data
    if ":" in data.name:
        module_name, _, attr = data.name.partition(":")
        try:
            loaded = getattr(importlib.import_module(module_name), attr)()
        except (ImportError, AttributeError) as exc:
            raise LesionError(f"data.name {data.name!r}: cannot import {attr!r} from {module_name!r} ({exc})") from None
        if isinstance(loaded, Split):
            loaded = Dataset(data.name, loaded, None)
        if not isinstance(loaded, Dataset):
            raise LesionError(f"data.name {data.name!r}: expected a function returning a Split or Dataset, got {type(loaded).__name__}")
        return loaded
    kwargs: dict[str, Any] = {}
    if data.name == "folder":
        kwargs = {"train_dir": _path(base, data.train_dir), "val_dir": _path(base, data.val_dir)}
    elif data.name != "digits":
        kwargs = {"train": spec.model.train is not None}
    return load_dataset(data.name, _path(base, data.dir), normalize=data.normalize, **kwargs)


def _model(spec: StudyFile, base: Path) -> tuple[nn.Module, Mapping[str, torch.Tensor] | None]:
    """The trained model in eval mode and its initial weights (None when unknown)."""
    checkpoint = _path(base, spec.model.checkpoint)
    model = load_model(spec.model.name, checkpoint, **spec.model.args)
    initial_path = _path(base, spec.model.initial)
    if initial_path is not None:
        stored = load_checkpoint(initial_path)
        return model, stored.get("initial", stored.get("trained"))
    return model, None if checkpoint is None else load_checkpoint(checkpoint).get("initial")


def _train(spec: StudyFile, dataset: Dataset) -> dict[str, Any]:
    from lesion.train import train_model

    train = spec.model.train
    if train is None or dataset.train is None:
        raise LesionError(f"model.train: the data {spec.data.name!r} has no train split to train on")
    return train_model(
        spec.model.name or "", dataset, seed=spec.seed, epochs=train.epochs, lr=train.lr, momentum=train.momentum,
        batch_size=train.batch_size, model_kwargs=dict(spec.model.args),
    )


def _plans(spec: StudyFile, model: nn.Module, split: Split) -> list[Plan]:
    plans = []
    for plan in spec.plans:
        name = plan_name(plan)
        if isinstance(plan, SinglePlan):
            plans.append(single(model, plan.layers, plan.method, name=name))
        elif isinstance(plan, PairsPlan):
            plans.append(pairs(model, plan.layers, plan.method, name=name))
        elif isinstance(plan, FractionPlan):
            ranking = None if plan.attribute is None else _ranking(model, split, plan.layers, plan.attribute)
            plans.append(fraction(
                model, plan.layers.split(";"), plan.fractions, plan.select, seed=spec.seed, draws=plan.draws,
                attribute=ranking, highest=plan.order == "descending", method=plan.method, name=name,
            ))
        elif isinstance(plan, CumulativePlan):
            ordered: dict[str, Any] = {} if plan.attribute is None else {plan.attribute: _ranking(model, split, plan.layers, plan.attribute)}
            seeds = plan.seeds if plan.attribute is None else ()
            plans.append(cumulative(model, plan.layers, step=plan.step, seeds=seeds, attributes=ordered, method=plan.method, name=name))
    return plans


def _ranking(model: nn.Module, split: Split, layers: str, attribute: str) -> dict[str, np.ndarray]:
    """Per layer, the ``attribute`` of each unit (the layer's output as its activation)."""
    from lesion._units import layers as lesionable
    from lesion._units import select

    names = list(select(lesionable(model), layers))
    wide = attributes_wide(unit_attributes(model, split, layers={name: name for name in names}))
    return {name: wide[wide["layer"] == name].sort_values("unit")[attribute].to_numpy() for name in names}


def _analyses(
    spec: StudyFile, model: nn.Module, split: Split, run: Run, initial: Mapping[str, torch.Tensor] | None
) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """The tables of the requested analyses; notes say which were skipped and why."""
    wanted, tables, notes = spec.analyses, {}, []
    kinds = {plan_name(p): p for p in spec.plans}
    singles = [name for name, p in kinds.items() if isinstance(p, SinglePlan)]
    if wanted.effects:
        tables["effects"] = lesion_effects(run, alpha=wanted.alpha)
    for name, plan in kinds.items():
        if isinstance(plan, PairsPlan) and wanted.pairs:
            try:
                tables[f"pairs-{name}"] = pair_analysis(run, plan=name)
            except LesionError as exc:
                notes.append(f"pair analysis of plan {name!r} skipped: {exc} (add a single plan of the same units)")
        if isinstance(plan, FractionPlan) and wanted.depth:
            tables[f"depth-{name}"] = layer_effects(run, name)
        if isinstance(plan, SinglePlan) and wanted.aes:
            tables[f"aes-{name}"] = unit_ablation_selectivity(run, name)
    if wanted.attributes or wanted.correlations:
        layers = list(dict.fromkeys(layer for name in singles for layer in run.lesions(name)["layers"]))
        if not layers:
            notes.append("unit attributes skipped: they are computed for the layers of single plans, and there is none")
        else:
            activations = {layer: wanted.activations.get(layer, layer) for layer in layers}
            tables["attributes"] = unit_attributes(model, split, layers=activations, initial=initial)
            if wanted.correlations and "effects" in tables:
                tables["correlations"] = attribute_correlations(tables["attributes"], tables["effects"], layers=layers)
            elif wanted.correlations:
                notes.append("correlations skipped: they need the effects analysis (analyses.effects = true)")
    return tables, notes


def _shapley(spec: StudyFile, model: nn.Module, split: Split, out: Path, progress: bool) -> dict[str, pd.DataFrame]:
    """Tables ``shapley`` (player × class × metric) and, with pairs, ``shapley-interactions``."""
    from lesion.search import shapley

    cfg = spec.analyses.shapley
    if cfg is None:
        return {}
    pairs = []
    for text in cfg.pairs:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if len(parts) != 2:
            raise LesionError(f"analyses.shapley.pairs: expected two players like 'fc1:3,fc1:7', got {text!r}")
        pairs.append((parts[0], parts[1]))
    engine = spec.engine
    with on_device(model, engine.device):
        result = shapley(
            model, split, cfg.layers, out, group=cfg.group, permutations=cfg.permutations, tolerance=cfg.tolerance,
            seed=spec.seed, sampling=cfg.sampling, exact=cfg.exact, pairs=pairs, loss=cfg.loss,
            model_name=spec.model.name or str(spec.model.checkpoint), progress=progress, options=engine.options(),
        )
    return {"shapley": result.values, **({"shapley-interactions": result.interactions} if pairs else {})}


def _improve(spec: StudyFile, model: nn.Module, train: Split, test: Split, out: Path, progress: bool) -> dict[str, pd.DataFrame]:
    """Tables ``improve-classes`` (validation and test change per class, McNemar) and ``improve-steps``."""
    from lesion.search import improve

    cfg = spec.analyses.improve
    if cfg is None:
        return {}
    engine = spec.engine
    with on_device(model, engine.device):
        result = improve(
            model, train, test, cfg.layers, out, target=cfg.target, tolerance=cfg.tolerance, validation=cfg.validation,
            seed=spec.seed, beam=cfg.beam, max_size=cfg.max_size, model_name=spec.model.name or str(spec.model.checkpoint),
            progress=progress, options=engine.options(),
        )
    return {"improve-classes": result.classes.assign(lesion=result.lesion.key, objective=result.objective),
            "improve-steps": result.steps}


def _embed(spec: StudyFile, split: Split) -> np.ndarray:
    """A 2-D embedding of the evaluation inputs (t-SNE or UMAP), seeded."""
    from lesion.embed import tsne, umap_embed

    x = torch.as_tensor(split.inputs).reshape(len(split), -1).numpy()
    if spec.analyses.embedding == "tsne":
        return tsne(x, seed=spec.seed, perplexity=min(30.0, (len(x) - 1) / 3))
    return umap_embed(x, seed=spec.seed)
