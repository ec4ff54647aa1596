"""What the HTML report shows of `lesion shapley` and `lesion improve` results, read from what they stored.

Nothing is re-estimated here: the Shapley values, standard errors, leave-one-out effects and pair
interactions are the tables the command wrote (``RUN/shapley.csv`` and ``RUN/interactions.csv`` of
`lesion shapley`, ``tables/shapley.csv`` and ``tables/shapley-interactions.csv`` of a study); the
improve view reads ``classes.csv`` / ``steps.csv`` of `lesion improve` (``tables/improve-classes.csv``
and ``improve-steps.csv`` of a study). Both are checked against their run databases (players,
leave-one-out effects, validation and test changes); a table that disagrees is not shown, and the
page says why. Accuracies are turned into percentage points once, here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lesion.report._data import rounded, significant
from lesion.store import DB_NAME, Run

#: Stored numbers and the run database agree within this (accuracies; CSVs keep 15+ digits).
AGREE = 1e-9
VALIDATION = "validation"
TEST = "test"
#: Columns the views read from `lesion shapley`'s and `lesion improve`'s tables.
SHAPLEY_COLUMNS = ("player", "class", "class_name", "metric", "value", "se", "single")
INTERACTION_COLUMNS = ("player_a", "player_b", "class", "metric", "value", "se", "pair")
IMPROVE_COLUMNS = ("class", "class_name", "val_intact", "val_lesion", "val_change", "test_intact", "test_lesion",
                   "test_change", "lost", "gained", "p", "q", "held")


def _pp(values: Any, digits: int = 4) -> list[float | None]:
    """Accuracies (fractions) as percentage points, rounded; NaN becomes None."""
    return rounded(100.0 * np.asarray(values, dtype=np.float64), digits)


def _raw(values: Any, digits: int = 6) -> list[float | None]:
    return rounded(values, digits)


def is_improve_dir(path: Path) -> bool:
    """A `lesion improve` output folder of one network: ``validation/`` holding a run."""
    return (path / VALIDATION / DB_NAME).is_file()


def improve_dirs(path: Path) -> list[Path]:
    """``path`` itself when it is an improve folder, else its subfolders that are (``lesion improve``'s OUT)."""
    if is_improve_dir(path):
        return [path]
    return sorted(p for p in path.iterdir() if p.is_dir() and is_improve_dir(p)) if path.is_dir() else []


def _study_table(study: Path | None, name: str) -> Path | None:
    if study is None:
        return None
    file = study / "tables" / f"{name}.csv"
    return file if file.is_file() else None


def _first(*files: Path | None) -> Path | None:
    return next((f for f in files if f is not None and f.is_file()), None)


def shapley_payload(run: Run, label: str, run_index: int, study: Path | None = None) -> dict[str, Any]:
    """The Shapley view of ``run`` (a run whose config holds ``shapley``).

    Returns
    -------
    dict
        ``label``, ``run`` (index of the run view), ``players`` (P keys), ``exact``, ``permutations``,
        ``sampling``, ``seed``, ``achieved_se`` (largest SE of overall top-1 over the players, pp),
        ``target_se`` (the last call's ``tolerance`` in pp, None without one or in runs that predate it),
        ``budget`` (its permutation budget), ``columns`` (one per
        metric × class: metric, class, name, unit, and P-lists value, se, single), ``pairs`` (a, b, and
        per column value, se, pair lists), ``notes``, ``ok`` (False: no values shown).
    """
    identity = run.config.get("shapley", {})
    exact = bool(identity.get("exact", False))
    payload: dict[str, Any] = {
        "label": label,
        "run": run_index,
        "players": list(identity.get("players", [])),
        "exact": exact,
        "permutations": 0 if exact else run.meta("shapley:permutations"),
        "sampling": identity.get("sampling"),
        "seed": identity.get("seed"),
        "achieved_se": None,
        "target_se": None,
        "budget": None,
        "columns": [],
        "pairs": {"a": [], "b": [], "columns": []},
        "notes": [],
        "ok": False,
    }
    stopping = run.meta("shapley:stopping") or {}
    if stopping.get("tolerance") is not None:
        payload["target_se"] = round(100.0 * float(stopping["tolerance"]), 4)
    payload["budget"] = stopping.get("budget")
    values_file = _first(run.path / "shapley.csv", _study_table(study, "shapley"))
    if values_file is None:
        payload["notes"].append(
            "No stored Shapley values: this run holds the coalitions' counts, and the values are written by "
            "`lesion shapley` (RUN/shapley.csv) or a study (tables/shapley.csv)."
        )
        return payload
    if payload["permutations"] is None:
        payload["notes"].append("The run records no finished sampling (shapley:permutations): it was interrupted; rerun it to finish.")
    values = pd.read_csv(values_file)
    problem = _check_shapley(run, values, payload["players"])
    if problem:
        payload["notes"].append(f"{values_file.name} is not shown: {problem}.")
        return payload
    players = payload["players"]
    for (metric, cls), group in values.groupby(["metric", "class"], sort=False):
        rows = group.set_index("player").reindex(players)
        scale = _pp if metric == "top1" else _raw
        payload["columns"].append({
            "metric": str(metric), "class": int(cls), "name": str(rows["class_name"].iloc[0]),
            "unit": "pp" if metric == "top1" else "nats",
            "value": scale(rows["value"]), "se": scale(rows["se"]), "single": scale(rows["single"]),
        })
    payload["columns"].sort(key=lambda c: (c["metric"] != "top1", c["metric"], c["class"]))
    overall = values[(values["metric"] == "top1") & (values["class"] == -1)]
    payload["achieved_se"] = round(100.0 * float(overall["se"].max()), 4)
    payload["ok"] = True
    inter_file = _first(run.path / "interactions.csv", _study_table(study, "shapley-interactions"))
    if inter_file is not None:
        inter = pd.read_csv(inter_file)
        missing = [c for c in INTERACTION_COLUMNS if c not in inter]
        if missing or not set(inter["player_a"]) | set(inter["player_b"]) <= set(players):
            payload["notes"].append(f"{inter_file.name} is not shown: " + (f"it lacks the columns {missing}." if missing else "its pairs are not of the run's players."))
        else:
            payload["pairs"] = _pairs_payload(inter, payload["columns"])
    return payload


def _check_shapley(run: Run, values: pd.DataFrame, players: list[str]) -> str:
    """Why the stored table does not belong to ``run`` ("" when it does): players and leave-one-out effects."""
    missing = [c for c in SHAPLEY_COLUMNS if c not in values]
    if missing:
        return f"it lacks the columns {missing}"
    if sorted(set(values["player"])) != sorted(players):
        return f"its players ({len(set(values['player']))}) are not the run's ({len(players)})"
    top1 = run.table("top1")
    overall = values[(values["metric"] == "top1") & (values["class"] == -1)].set_index("player")["single"]
    if not set(players) <= set(top1.index):
        return "the run lacks the single-player lesions"
    expected = top1.loc["intact", "all"] - top1.loc[players, "all"]
    if not np.allclose(overall.reindex(players).to_numpy(), expected.to_numpy(), atol=AGREE, rtol=0):
        return "its leave-one-out effects differ from the run's single lesions (a table of another run?)"
    return ""


def _pairs_payload(inter: pd.DataFrame, columns: list[dict[str, Any]]) -> dict[str, Any]:
    """Pairs in stored order; per Shapley column (same order) value, se and the pair's own synergy."""
    pairs = list(dict.fromkeys(zip(inter["player_a"], inter["player_b"], strict=True)))
    out: dict[str, Any] = {"a": [a for a, _ in pairs], "b": [b for _, b in pairs], "columns": []}
    indexed = inter.set_index(["metric", "class", "player_a", "player_b"]).sort_index()
    for column in columns:
        scale = _pp if column["metric"] == "top1" else _raw
        rows = indexed.loc[column["metric"], column["class"]].reindex(pairs)
        out["columns"].append({"value": scale(rows["value"]), "se": scale(rows["se"]), "pair": scale(rows["pair"])})
    return out


def improve_payload(folder: Path, label: str, study: Path | None = None) -> dict[str, Any]:
    """The improve view of one network's `lesion improve` folder (``validation/``, ``test/``, the tables).

    Returns
    -------
    dict
        ``label``, ``chosen`` (lesion key; "intact" when nothing beat the intact network), ``size``,
        ``objective``, ``validation`` and ``test`` (split name, samples; fraction and seed of the
        validation part), ``classes`` (column lists, overall first: name, val_intact, val_lesion,
        val_change, test_intact, test_lesion, test_change in % / pp, lost, gained, p, q, held: 1 / 0 /
        None), ``held`` ([held, validation gains] over the classes), ``steps`` (step, lesion, score in
        %, feasible), ``notes``, ``ok``.
    """
    val_run = Run(folder / VALIDATION)
    try:
        val_data = val_run.meta("dataset") or {}
        identity = val_run.config.get("improve", {})
        val_labels = val_run.labels
        val_keys = set(val_run.lesions()["key"])
        chosen_from_runs = None
        test_data: dict[str, Any] | None = None
        test_keys: list[str] = []
        if (folder / TEST / DB_NAME).is_file():
            test_run = Run(folder / TEST)
            try:
                test_data = test_run.meta("dataset") or {}
                test_keys = [k for k in test_run.lesions()["key"] if k != "intact"]
            finally:
                test_run.close()
        if not test_keys:
            chosen_from_runs = "intact"
        elif len(test_keys) == 1:
            chosen_from_runs = test_keys[0]
        payload: dict[str, Any] = {
            "label": label, "chosen": None, "size": 0, "objective": None,
            "validation": {"name": val_data.get("name"), "n": len(val_labels),
                           "fraction": identity.get("validation"), "seed": identity.get("seed")},
            "test": None if test_data is None else {"name": test_data.get("name"), "n": test_data.get("n")},
            "classes": {}, "held": [0, 0], "steps": {}, "notes": [], "ok": False,
        }
        classes_file, steps_file, chosen, objective = _improve_tables(folder, study)
        chosen = chosen or chosen_from_runs
        payload["chosen"], payload["objective"] = chosen, objective
        if classes_file is None:
            payload["notes"].append(
                "No stored per-class table: it is written by `lesion improve` (classes.csv) or a study "
                "(tables/improve-classes.csv)."
            )
            return payload
        if chosen is None:
            payload["notes"].append(
                f"The test run holds several chosen lesions ({', '.join(test_keys)}): reruns with other objectives; "
                "the table does not say which one it reports."
            )
            return payload
        classes = pd.read_csv(classes_file)
        problem = _check_improve(folder, classes, chosen, val_keys, val_run)
    finally:
        val_run.close()
    if problem:
        payload["notes"].append(f"{classes_file.name} is not shown: {problem}.")
        return payload
    payload["size"] = 0 if chosen == "intact" else _size(chosen)
    held = [None if pd.isna(v) else int(str(v).lower() in ("true", "1", "1.0")) for v in classes["held"]]
    payload["classes"] = {
        "name": [str(v) for v in classes["class_name"]],
        "cls": [int(v) for v in classes["class"]],
        **{col: _pp(classes[col], 3) for col in ("val_intact", "val_lesion", "val_change", "test_intact", "test_lesion", "test_change")},
        "lost": [int(v) for v in classes["lost"]],
        "gained": [int(v) for v in classes["gained"]],
        "p": significant(classes["p"]),
        "q": significant(classes["q"]),
        "held": held,
    }
    per_class = [h for c, h in zip(classes["class"], held, strict=True) if c >= 0 and h is not None]
    payload["held"] = [int(sum(per_class)), len(per_class)]
    if steps_file is not None:
        steps = pd.read_csv(steps_file)
        payload["steps"] = {
            "step": [int(v) for v in steps["step"]],
            "lesion": [str(v) for v in steps["lesion"]],
            "score": _pp(steps["score"], 3),
            "feasible": [bool(v) for v in steps["feasible"]],
        }
    payload["ok"] = True
    return payload


def _size(key: str) -> int:
    from lesion._lesion import Lesion

    return Lesion.from_key(key).size


def _improve_tables(folder: Path, study: Path | None) -> tuple[Path | None, Path | None, str | None, str | None]:
    """(classes table, steps table, chosen lesion key, objective) as stored: the folder's own CSVs, the
    study's tables, or the population table ``improve.csv`` beside the folder (for the key and objective)."""
    classes = _first(folder / "classes.csv", _study_table(study, "improve-classes"))
    steps = _first(folder / "steps.csv", _study_table(study, "improve-steps"))
    chosen = objective = None
    for table, match in ((classes, None), (folder.parent / "improve.csv", folder.name)):
        if table is None or not table.is_file():
            continue
        frame = pd.read_csv(table)
        if match is not None:
            if "network" not in frame:
                continue
            frame = frame[frame["network"].astype(str) == match]
        if "lesion" in frame and len(frame) and frame["lesion"].nunique() == 1:
            chosen = str(frame["lesion"].iloc[0])
            objective = str(frame["objective"].iloc[0]) if "objective" in frame else None
            break
    return classes, steps, chosen, objective


def _check_improve(folder: Path, classes: pd.DataFrame, chosen: str, val_keys: set[str], val_run: Run) -> str:
    """Why the stored table does not belong to ``folder``'s runs ("" when it does): the overall validation
    and test changes recomputed from the runs' per-sample outcomes."""
    missing = [c for c in IMPROVE_COLUMNS if c not in classes]
    if missing:
        return f"it lacks the columns {missing}"
    overall = classes[classes["class"] == -1]
    if len(overall) != 1:
        return "it has no overall row (class -1)"
    row = overall.iloc[0]
    if chosen not in val_keys:
        return f"the chosen lesion {chosen!r} is not in the validation run"
    val_change = val_run.correct(chosen)[0].mean() - val_run.correct("intact")[0].mean()
    if abs(val_change - row["val_change"]) > AGREE:
        return "its validation change differs from the validation run's outcomes"
    if chosen != "intact":
        test_run = Run(folder / TEST)
        try:
            test_change = test_run.correct(chosen)[0].mean() - test_run.correct("intact")[0].mean()
        finally:
            test_run.close()
        if abs(test_change - row["test_change"]) > AGREE:
            return "its test change differs from the test run's outcomes"
    return ""
