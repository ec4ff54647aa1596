"""What the HTML report shows of one run, as plain JSON-ready values (no HTML here).

`run_payload` reads a run only through `lesion.store.Run` and turns it into compact, column-wise
lists: the lesion table (one entry per finished lesion), the lesions x classes heatmap, and one
detail record per lesion (per-class correct / lost / gained, where the lost samples went, sample
indices for thumbnails, pair synergy). `Limits` bounds what a large run puts into the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lesion._errors import LesionError
from lesion._lesion import Lesion
from lesion.stats import benjamini_hochberg, mcnemar_exact, pair_synergy
from lesion.store import Run

#: False discovery rate of the Benjamini-Hochberg correction shown in the report.
ALPHA = 0.05


@dataclass(frozen=True)
class Limits:
    """What one run may put into the report (larger runs are aggregated, see the README).

    Parameters
    ----------
    table_rows : int, default=50_000
        Lesions listed in the table; beyond it, the lesions with the largest overall change.
    heatmap_rows : int, default=2_000
        Lesions drawn in the lesions x classes heatmap (same choice, kept in plan order).
    detail : int, default=2_000
        Lesions with a full lesion view (confusion change, thumbnails); the others show their
        table numbers and per-class bars only.
    thumbnails : int, default=24
        Lost and gained samples shown per lesion (each).
    sprite : int, default=1_500
        Distinct sample images in the file at most (shared by every lesion view).
    confusion_cells : int, default=60
        Cells of each confusion change of a lesion view (the largest counts; nearly always all of
        them with 10 classes).
    table_bytes : int, default=8_000_000
        Bytes the table's rows may take, at about ``60 + 28 * n_classes`` bytes a row: with many
        classes, fewer rows than ``table_rows``.
    heatmap_cells : int, default=200_000
        Heatmap cells (lesions x classes) at most.
    """

    table_rows: int = 50_000
    heatmap_rows: int = 2_000
    detail: int = 2_000
    thumbnails: int = 24
    sprite: int = 1_500
    confusion_cells: int = 60
    table_bytes: int = 8_000_000
    heatmap_cells: int = 200_000

    def scaled(self, runs: int) -> Limits:
        """The limits of each of ``runs`` runs sharing one report (a study)."""
        share = max(1, runs)
        return Limits(
            table_rows=max(1_000, self.table_rows // share),
            heatmap_rows=self.heatmap_rows,
            detail=max(250, self.detail // share),
            thumbnails=self.thumbnails,
            sprite=self.sprite,
            confusion_cells=self.confusion_cells,
            table_bytes=max(1_000_000, self.table_bytes // share),
            heatmap_cells=self.heatmap_cells,
        )

    def rows(self, n_classes: int) -> tuple[int, int]:
        """(table rows, heatmap rows) at most, for a run of ``n_classes`` classes."""
        table = min(self.table_rows, max(1, self.table_bytes // (60 + 28 * n_classes)))
        return table, min(self.heatmap_rows, max(1, self.heatmap_cells // n_classes))


def rounded(values: Any, digits: int) -> list[float | None]:
    """Values rounded for the file; NaN becomes None (JSON null)."""
    array = np.asarray(values, dtype=np.float64)
    return [None if math.isnan(v) else round(float(v), digits) for v in array]


def significant(values: Any, digits: int = 3) -> list[float | None]:
    """Values to ``digits`` significant digits (p-values)."""
    return [None if math.isnan(v) else float(f"{v:.{digits}g}") for v in np.asarray(values, dtype=np.float64)]


def _chosen(change: np.ndarray, limit: int) -> np.ndarray:
    """Indices (ascending) of at most ``limit`` rows with the largest |change| (ties: plan order)."""
    if len(change) <= limit:
        return np.arange(len(change))
    order = np.argsort(-np.abs(np.nan_to_num(change)), kind="stable")[:limit]
    return np.sort(order)


def run_payload(run: Run, limits: Limits | None = None) -> dict[str, Any]:
    """Everything the report shows of ``run``.

    Returns
    -------
    dict
        ``classes`` (names), ``k``, ``intact`` (per-class n / top-1 / top-k and overall),
        ``lesions`` (column lists over the L table lesions: key, plan, layers, size, d1 / dk
        overall top-1 / top-k change in pp, lost, gained, p (exact McNemar), q and sig
        (Benjamini-Hochberg), near (near-ties), cls: (L, n_classes) top-1 change in pp),
        ``heatmap`` (row indices into ``lesions``), ``detail`` (key -> per-lesion record),
        ``pairs``, ``complete``, ``notes`` and ``thumbnail_requests`` (sample indices wanted).
    """
    limits = limits or Limits()
    lesions = run.lesions()
    done = lesions[lesions["done"]]
    if "intact" not in set(done["key"]):
        raise LesionError(f"run {str(run.path)!r} holds no evaluated intact network: an empty run, nothing to report")
    finished = done[done["key"] != "intact"].reset_index(drop=True)
    total = int((lesions["key"] != "intact").sum())
    if finished.empty:
        raise LesionError(
            f"run {str(run.path)!r} holds no finished lesion (0 of {total}): an empty run, nothing to report; "
            "run or resume its sweep first"
        )
    classes = list(run.class_names)
    n_classes = len(classes)
    metrics = run.metrics()
    wide = metrics.pivot_table(index=["lesion", "class"], columns="metric", values="value", sort=False, dropna=False)
    intact = wide.loc["intact"]
    keys = list(finished["key"])
    by_class = {m: wide[m].unstack("class").reindex(index=keys, columns=[*range(n_classes), -1]) for m in ("top1", "topk", "lost", "gained")}
    intact_top1 = intact["top1"].reindex([*range(n_classes), -1]).to_numpy()
    intact_topk = intact["topk"].reindex([*range(n_classes), -1]).to_numpy()
    change = (by_class["top1"].to_numpy() - intact_top1) * 100.0  # (L, n_classes + 1), last: overall
    change_k = (by_class["topk"].to_numpy() - intact_topk) * 100.0
    lost = by_class["lost"].to_numpy().astype(np.int64)
    gained = by_class["gained"].to_numpy().astype(np.int64)
    p = np.asarray(mcnemar_exact(lost, gained), dtype=np.float64)  # (L, n_classes + 1)
    q, reject = benjamini_hochberg(p, alpha=ALPHA)  # one family: every lesion, every class and overall

    table_rows, heatmap_rows = limits.rows(n_classes)
    table = _chosen(change[:, -1], table_rows)
    notes: list[str] = []
    if len(table) < len(keys):
        notes.append(
            f"The table lists the {len(table):,} lesions with the largest overall change of {len(keys):,}; "
            "export the run (lesion export) for all of them."
        )
    t_keys = [keys[i] for i in table]
    payload_lesions = {
        "key": t_keys,
        "plan": [str(v) for v in finished["plan"].to_numpy()[table]],
        "layers": [str(v) for v in finished["layers"].to_numpy()[table]],
        "size": [int(v) for v in finished["size"].to_numpy()[table]],
        "d1": rounded(change[table, -1], 3),
        "dk": rounded(change_k[table, -1], 3),
        "lost": [int(v) for v in lost[table, -1]],
        "gained": [int(v) for v in gained[table, -1]],
        "p": significant(p[table, -1]),
        "q": significant(q[table, -1]),
        "sig": [int(v) for v in reject[table, -1]],
        "near": [int(v) for v in finished["near_ties"].fillna(0).to_numpy()[table]],
        "cls": [rounded(row, 3) for row in change[table, :-1]],
    }
    heat = _chosen(change[table, -1], heatmap_rows)
    if len(heat) < len(table):
        notes.append(f"The heatmap shows the {len(heat):,} lesions with the largest overall change, in plan order.")
    detail_rows = _chosen(change[table, -1], limits.detail)
    if len(detail_rows) < len(table):
        notes.append(
            f"Lesion views with confusion change and thumbnails exist for the {len(detail_rows):,} lesions with the "
            "largest overall change; the others show their per-class bars only."
        )
    labels = run.labels
    intact_correct, _ = run.correct("intact")
    counts = {
        "n": _ints(intact["n"].reindex(range(n_classes))),
        "correct": [int(v) for v in np.bincount(labels[intact_correct], minlength=n_classes)],
    }
    detail, requests = _details(run, [table[i] for i in detail_rows], keys, labels, intact_correct, n_classes, limits)
    bars = {
        "lost": [[int(v) for v in row] for row in lost[table, :-1]],
        "gained": [[int(v) for v in row] for row in gained[table, :-1]],
        "q": [significant(row) for row in q[table, :-1]],
        "sig": [[int(v) for v in row] for row in reject[table, :-1]],
    }
    return {
        "groups": _groups(finished, change[:, -1], reject[:, -1]),
        "classes": classes,
        "k": int(run.config.get("k", 1)),
        "n": len(labels),
        "intact": {
            "n": counts["n"],
            "correct": counts["correct"],
            "top1": rounded(intact_top1[:-1] * 100, 3),
            "topk": rounded(intact_topk[:-1] * 100, 3),
            "overall": {"top1": round(float(intact_top1[-1]) * 100, 3), "topk": round(float(intact_topk[-1]) * 100, 3)},
        },
        "lesions": payload_lesions,
        "bars": bars,
        "heatmap": [int(i) for i in heat],
        "detail": detail,
        "pairs": _pairs(t_keys, np.asarray(change[table]), classes),
        "complete": {"done": len(keys), "total": total},
        "notes": notes,
        "thumbnail_requests": requests,
    }


def _groups(finished: pd.DataFrame, overall: np.ndarray, significant: np.ndarray) -> dict[str, list[Any]]:
    """Every finished lesion (not only the table's), aggregated by plan and layers.

    Column lists: plan, layers, n (lesions), mean / worst (min) / best (max) overall top-1 change in
    pp, sig (lesions whose overall change survives Benjamini-Hochberg).
    """
    frame = pd.DataFrame(
        {"plan": finished["plan"].astype(str), "layers": finished["layers"].astype(str), "d1": overall, "sig": significant}
    )
    grouped = frame.groupby(["plan", "layers"], sort=False)
    table = grouped["d1"].agg(["size", "mean", "min", "max"]).join(grouped["sig"].sum()).reset_index()
    return {
        "plan": table["plan"].tolist(),
        "layers": table["layers"].tolist(),
        "n": [int(v) for v in table["size"]],
        "mean": rounded(table["mean"], 3),
        "worst": rounded(table["min"], 3),
        "best": rounded(table["max"], 3),
        "sig": [int(v) for v in table["sig"]],
    }


def _ints(values: pd.Series) -> list[int]:
    return [int(v) for v in values.to_numpy()]


def _details(
    run: Run,
    rows: list[int],
    keys: list[str],
    labels: np.ndarray,
    intact_correct: np.ndarray,
    n_classes: int,
    limits: Limits,
) -> tuple[dict[str, Any], list[int]]:
    """Per detailed lesion: where its lost samples went and which samples to show.

    ``lost_to``: flat [true class, new top-1 class, count, ...] over the lost samples;
    ``gained_from``: flat [true class, intact top-1 class, count, ...] over the gained samples;
    ``thumbs``: {"lost": [sample indices], "gained": [...]}. Lesions are visited by decreasing
    overall damage, and each prefers samples already chosen for another lesion, so the file
    holds few distinct images (at most ``limits.sprite``).
    """
    intact_top1 = run.topk("intact")[:, 0]
    pool: dict[int, None] = {}
    detail: dict[str, Any] = {}
    records = []
    for row in rows:
        key = keys[row]
        top1 = run.topk(key)[:, 0]
        right = top1 == labels
        lost = np.flatnonzero(intact_correct & ~right)
        gained = np.flatnonzero(~intact_correct & right)
        records.append((key, lost, gained))
        lost_to, lost_cells = _flat_counts(labels[lost], top1[lost], n_classes, limits.confusion_cells)
        gained_from, gained_cells = _flat_counts(labels[gained], intact_top1[gained], n_classes, limits.confusion_cells)
        detail[key] = {"lost_to": lost_to, "lost_cells": lost_cells, "gained_from": gained_from, "gained_cells": gained_cells}
    for key, lost, gained in sorted(records, key=lambda r: -len(r[1])):
        detail[key]["thumbs"] = {
            "lost": _pick(lost, pool, limits),
            "gained": _pick(gained, pool, limits),
            "n_lost": len(lost),
            "n_gained": len(gained),
        }
    return detail, sorted(pool)


def _flat_counts(true: np.ndarray, predicted: np.ndarray, n_classes: int, cap: int) -> tuple[list[int], int]:
    """Flat [true, predicted, count, ...] of the ``cap`` largest (true, predicted) counts, and the number of nonzero cells."""
    cells, counts = np.unique(true.astype(np.int64) * n_classes + predicted, return_counts=True)
    keep = np.sort(np.argsort(-counts, kind="stable")[:cap])
    flat = [int(v) for c, n in zip(cells[keep], counts[keep], strict=True) for v in (c // n_classes, c % n_classes, n)]
    return flat, len(cells)


def _pick(samples: np.ndarray, pool: dict[int, None], limits: Limits) -> list[int]:
    """Up to ``limits.thumbnails`` of ``samples``: those already in ``pool`` first, then new ones while it has room."""
    known = [int(s) for s in samples if int(s) in pool][: limits.thumbnails]
    for s in samples:
        if len(known) >= limits.thumbnails or len(pool) >= limits.sprite:
            break
        if int(s) not in pool:
            pool[int(s)] = None
            known.append(int(s))
    return sorted(known)


def _pairs(keys: list[str], change: np.ndarray, classes: list[str]) -> dict[str, list[Any]]:
    """Two-unit lesions whose two single-unit lesions are in the table, with their synergy.

    ``synergy = pair - (single_a + single_b)`` on top-1 changes in pp (`lesion.stats.pair_synergy`):
    negative = the pair hurts more than its parts add up to (redundancy). Column lists: pair, a, b
    (indices into the table), syn (overall), cls (per-class synergy).
    """
    index = {key: i for i, key in enumerate(keys)}
    parts: dict[int, tuple[int, int]] = {}
    for i, key in enumerate(keys):
        lesion = Lesion.from_key(key)
        if lesion.size != 2:
            continue
        singles = [
            Lesion(((name, (unit,)),), lesion.method).key for name, units in lesion.units for unit in units
        ]
        if all(s in index for s in singles):
            parts[i] = (index[singles[0]], index[singles[1]])
    empty: dict[str, list[Any]] = {"pair": [], "a": [], "b": [], "syn": [], "cls": []}
    if not parts:
        return empty
    needed = sorted({u for ab in parts.values() for u in ab})
    n = len(classes)
    table = pair_synergy(
        {u: change[u, :n] for u in needed},
        {ab: change[i, :n] for i, ab in parts.items()},
        single_overall={u: change[u, n] for u in needed},
        pair_overall={ab: change[i, n] for i, ab in parts.items()},
    )
    synergy = table["synergy"].to_numpy().reshape(len(parts), n + 1)  # class -1 (overall) first
    return {
        "pair": list(parts),
        "a": [a for a, _ in parts.values()],
        "b": [b for _, b in parts.values()],
        "syn": rounded(synergy[:, 0], 3),
        "cls": [rounded(row, 3) for row in synergy[:, 1:]],
    }
