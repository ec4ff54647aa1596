"""`improve`: search for lesions that raise accuracy, chosen on validation data and reported once on test.

The split discipline: the search sees only a seeded, stratified validation part of the *training*
split (:func:`validation_split`); every candidate of a greedy step goes to the engine in one sweep
into ``OUT/validation``. When the search has chosen, the chosen lesion alone (with the intact
network) is evaluated on the untouched test split into ``OUT/test`` and compared with the intact
network class by class (exact McNemar, Benjamini-Hochberg over the classes). The test split is
never read before the choice is final.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from torch import nn

from lesion._errors import LesionError, check_int
from lesion._lesion import INTACT, Lesion
from lesion._sweep import sweep
from lesion._units import SelectionLike
from lesion.data import Split
from lesion.engine import EngineOptions, check_model_device
from lesion.engine._options import engine_options
from lesion.metrics import correct
from lesion.plans import Plan
from lesion.search._shapley import as_players, coalition
from lesion.stats._tests import benjamini_hochberg, mcnemar_exact
from lesion.store import Run


def _validation_indices(train: Split, fraction: float, seed: int) -> np.ndarray:
    if not 0 < fraction < 1:
        raise LesionError(f"validation: expected a fraction of the training split in (0, 1), got {fraction!r}")
    check_int("seed", seed, 0)
    labels = train.labels.numpy()
    counts = np.bincount(labels)
    stratify = labels if counts[counts > 0].min() >= 2 else None
    _, chosen = train_test_split(np.arange(len(labels)), test_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(chosen)


def validation_split(train: Split, fraction: float = 0.2, seed: int = 0) -> Split:
    """A seeded, stratified ``fraction`` of ``train`` (its samples in index order), named after both.

    >>> from lesion.data import digits
    >>> part = validation_split(digits().train, 0.25, seed=1)
    >>> len(part), part.name
    (315, 'digits/train:validation[0.25,seed=1]')
    """
    return train.subset(_validation_indices(train, fraction, seed), f"{train.name}:validation[{fraction:g},seed={seed}]")


def training_part(train: Split, fraction: float = 0.2, seed: int = 0) -> Split:
    """The rest of ``train`` after :func:`validation_split` with the same arguments: train a network on
    it (``lesion.train.train_model`` with ``Dataset(name, test, training_part(...))``) and the validation
    part that :func:`improve` chooses on is one the network never saw.
    """
    keep = np.setdiff1d(np.arange(len(train)), _validation_indices(train, fraction, seed))
    return train.subset(keep, f"{train.name}:training[{1 - fraction:g},seed={seed}]")


@dataclass(frozen=True)
class ImproveResult:
    """What :func:`improve` chose and how it did.

    Attributes
    ----------
    lesion : Lesion
        The chosen lesion (``INTACT`` when no lesion beat the intact network on validation).
    steps : DataFrame
        The search path: step, lesion, score (the objective on validation), feasible.
    classes : DataFrame
        One row per class and overall (class -1): class, class_name, val_intact, val_lesion,
        val_change, test_intact, test_lesion, test_change, lost, gained (test samples), p (exact
        McNemar on test), q (Benjamini-Hochberg over the classes), held (a validation gain that is
        also a gain on test; NA where validation showed no gain).
    objective : str
        ``overall`` or ``class:<c>``.
    run : Path
    """

    lesion: Lesion
    steps: pd.DataFrame
    classes: pd.DataFrame
    objective: str
    run: Path

    @property
    def held(self) -> tuple[int, int]:
        """(classes whose validation gain also held on test, classes with a validation gain)."""
        rows = self.classes[(self.classes["class"] >= 0) & self.classes["held"].notna()]
        return int(rows["held"].astype(bool).sum()), len(rows)


def improve(
    model: nn.Module,
    train: Split,
    test: Split,
    selection: SelectionLike | Sequence[Lesion],
    out: str | Path,
    *,
    target: int | None = None,
    tolerance: float = 0.0,
    validation: float = 0.2,
    seed: int = 0,
    beam: int = 1,
    max_size: int | None = None,
    group: str = "unit",
    method: str = "zero",
    model_name: str = "custom",
    options: EngineOptions | None = None,
    progress: bool = False,
) -> ImproveResult:
    """Greedy forward selection (optionally a beam) of units whose lesion raises validation accuracy.

    Parameters
    ----------
    model : nn.Module
        Never modified.
    train : Split
        The training split; only its validation part (``validation``, ``seed``) is used to choose. A
        network trained on all of ``train`` has seen that part: train it on :func:`training_part` for
        a validation part it never saw.
    test : Split
        Evaluated once, for the chosen lesion only.
    selection : str, mapping or sequence of Lesion
        The candidates (units of a selection, grouped by ``group``, or lesions themselves).
    out : path
        Directory holding the runs ``validation/`` and ``test/`` (rerun into it to resume; a rerun with
        another objective, beam or size reuses the outcomes there, and the test run then holds each
        objective's chosen lesion).
    target : int, optional
        Objective: None maximises overall top-1; a class index maximises that class's top-1
        subject to no other class dropping by more than ``tolerance`` (accuracy, e.g. 0.01).
    tolerance : float, default=0.0
    validation : float, default=0.2
        Fraction of ``train`` held out for choosing (seeded, stratified).
    seed : int, default=0
    beam : int, default=1
        Lesions kept per step (1: plain greedy).
    max_size : int, optional
        At most this many candidates lesioned together (default: all).
    options : EngineOptions, optional
        Engine settings of every sweep (device, batch size, memory, autocast...).
    group, method, model_name, progress
        As for :func:`lesion.search.shapley` and :func:`lesion.sweep`.

    Returns
    -------
    ImproveResult
    """
    candidates = as_players(model, selection, group, method)
    n = len(candidates)
    if n < 1:
        raise LesionError("selection: give at least one candidate")
    check_int("beam", beam, 1)
    max_size = n if max_size is None else check_int("max_size", max_size, 1, n)
    if target is not None:
        check_int("target", target, 0, train.n_classes - 1, " (a class index)")
    if not 0 <= tolerance <= 1:
        raise LesionError(f"tolerance: expected an accuracy drop in [0, 1], got {tolerance!r}")
    out = Path(out)
    val = validation_split(train, validation, seed)
    objective = "overall" if target is None else f"class:{target}"
    # The runs' identity: what the outcomes depend on (the validation part is also in the dataset
    # fingerprint). The objective, tolerance, beam and size only choose which lesions are evaluated, so
    # a rerun with other ones into the same directory reuses every outcome already there.
    config = {"improve": {"validation": validation, "seed": seed}}
    options = engine_options(options)
    check_model_device(model, options)
    sweep_options: dict[str, Any] = dict(model_name=model_name, options=options, k=1, config=config, progress=progress)
    chosen, steps = _search(model, val, candidates, out / "validation", target, tolerance, beam, max_size, sweep_options)
    classes = _report(model, val, test, chosen, out, sweep_options)
    return ImproveResult(chosen, steps, classes, objective, out)


def _search(
    model: nn.Module, val: Split, candidates: list[Lesion], out: Path, target: int | None, tolerance: float,
    beam: int, max_size: int, options: dict[str, Any],
) -> tuple[Lesion, pd.DataFrame]:
    """Greedy/beam forward selection on the validation split only; returns the best lesion and the path."""
    labels = val.labels.numpy()
    sizes = np.bincount(labels, minlength=val.n_classes).astype(np.float64)
    if target is not None and sizes[target] == 0:
        raise LesionError(f"target: class {target} has no sample in the validation split; choose another class or a larger --validation")
    present = np.flatnonzero(sizes)
    others = present[present != target]

    def accuracies(run: Run, key: str) -> np.ndarray:
        """Top-1 accuracy of each class present in validation, then overall, shape (len(present) + 1,)."""
        ok = correct(run.topk(key), labels)[0]
        per_class = np.bincount(labels, weights=ok.astype(np.float64), minlength=val.n_classes)
        return np.append(per_class[present] / sizes[present], ok.mean())

    def score(acc: np.ndarray, intact: np.ndarray) -> tuple[float, bool]:
        if target is None:
            return float(acc[-1]), True
        rows = np.searchsorted(present, others)
        feasible = bool(np.all(acc[rows] >= intact[rows] - tolerance - 1e-12))
        return float(acc[np.searchsorted(present, target)]), feasible

    frontier: list[tuple[int, ...]] = [()]
    rows = []
    best: tuple[float, tuple[int, ...]] | None = None
    intact_acc: np.ndarray | None = None
    for step in range(1, max_size + 1):
        sets = sorted({tuple(sorted({*members, c})) for members in frontier for c in range(len(candidates)) if c not in members})
        if not sets:
            break
        lesions = {coalition(candidates, s).key: s for s in sets}
        plan = Plan(f"improve-step-{step}", tuple(coalition(candidates, s) for s in sets), {"selector": "improve", "step": step})
        run = sweep(model, val, plan, out, extend=True, **options)  # each step adds its own plan
        try:
            if intact_acc is None:
                intact_acc = accuracies(run, "intact")
                best = (score(intact_acc, intact_acc)[0], ())
                rows.append((0, "intact", best[0], True))
            scored = []
            for key, members in lesions.items():
                value, feasible = score(accuracies(run, key), intact_acc)
                rows.append((step, key, value, feasible))
                if feasible:
                    scored.append((value, key, members))
        finally:
            run.close()
        scored.sort(key=lambda item: (-item[0], item[1]))
        if not scored:
            break
        frontier = [members for _, _, members in scored[:beam]]
        if best is None or scored[0][0] <= best[0]:
            break
        best = (scored[0][0], scored[0][2])
    chosen = coalition(candidates, best[1]) if best is not None else INTACT
    return chosen, pd.DataFrame(rows, columns=["step", "lesion", "score", "feasible"])


def _report(model: nn.Module, val: Split, test: Split, chosen: Lesion, out: Path, options: dict[str, Any]) -> pd.DataFrame:
    """The chosen lesion against the intact network per class, on validation and (once) on test.

    When nothing beat the intact network, the test split is not evaluated at all (test columns NaN).
    """
    val_run = Run(out / "validation")
    try:
        val_intact, val_lesion = val_run.correct("intact")[0], val_run.correct(chosen.key)[0]
    finally:
        val_run.close()
    labels_test = test.labels.numpy()
    test_intact = test_lesion = np.zeros(len(labels_test), dtype=bool)
    if chosen.size:
        test_run = sweep(model, test, Plan("improve-chosen", (chosen,), {"selector": "improve-chosen"}), out / "test", **options)
        try:
            test_intact, test_lesion = test_run.correct("intact")[0], test_run.correct(chosen.key)[0]
        finally:
            test_run.close()
    return _class_table(val.labels.numpy(), val_intact, val_lesion, labels_test, test_intact, test_lesion, test.class_names, bool(chosen.size))


def _class_table(
    labels_val: np.ndarray, val_intact: np.ndarray, val_lesion: np.ndarray,
    labels_test: np.ndarray, test_intact: np.ndarray, test_lesion: np.ndarray,
    class_names: tuple[str, ...], tested: bool,
) -> pd.DataFrame:
    def mean(values: np.ndarray, where: np.ndarray, valid: bool = True) -> float:
        return float(values[where].mean()) if valid and where.any() else np.nan

    rows = []
    for c in [-1, *range(len(class_names))]:
        v = np.ones(len(labels_val), bool) if c < 0 else labels_val == c
        t = np.ones(len(labels_test), bool) if c < 0 else labels_test == c
        val_change = mean(val_lesion, v) - mean(val_intact, v)
        test_change = mean(test_lesion, t, tested) - mean(test_intact, t, tested)
        lost = int((test_intact[t] & ~test_lesion[t]).sum())
        gained = int((~test_intact[t] & test_lesion[t]).sum())
        held = bool(test_change > 0) if tested and val_change > 0 and not np.isnan(test_change) else None
        rows.append((c, "all" if c < 0 else class_names[c], mean(val_intact, v), mean(val_lesion, v), val_change,
                     mean(test_intact, t, tested), mean(test_lesion, t, tested), test_change, lost, gained,
                     float(mcnemar_exact(lost, gained)) if tested else np.nan, held))
    df = pd.DataFrame(rows, columns=["class", "class_name", "val_intact", "val_lesion", "val_change", "test_intact",
                                     "test_lesion", "test_change", "lost", "gained", "p", "held"])
    classes = df["class"] >= 0
    df["q"] = np.nan
    df.loc[classes, "q"] = benjamini_hochberg(df.loc[classes, "p"].to_numpy())[0]
    return df[[*df.columns[:-2], "q", "held"]]
