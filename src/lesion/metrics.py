"""Everything derived from outcomes: top-1 / top-k accuracy overall and per class, samples lost and gained.

An *outcome* is the per-sample top-k prediction matrix ``topk`` of shape (N, k), best class first.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Metric names of :func:`class_metrics`, in table order.
METRICS = ("n", "top1", "topk", "lost", "gained")


def correct(topk: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample (top-1 correct, top-k correct), each a bool array of shape (N,)."""
    topk = np.asarray(topk)
    labels = np.asarray(labels)
    return topk[:, 0] == labels, (topk == labels[:, None]).any(axis=1)


def class_metrics(
    topk: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    intact_topk: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-class and overall metrics of one outcome.

    Parameters
    ----------
    topk : int array of shape (N, k)
    labels : int array of shape (N,)
    n_classes : int
    intact_topk : int array of shape (N, k), optional
        The intact network's outcome; ``lost`` (right before, wrong after, top-1) and ``gained``
        (wrong before, right after) are counted against it (0 when not given).

    Returns
    -------
    dict of metric name -> float array of shape (n_classes + 1,): entries 0..n_classes-1 are the
    classes, the last is the whole set. ``n`` is the sample count, ``top1``/``topk`` accuracies
    in [0, 1] (NaN for a class with no samples), ``lost``/``gained`` sample counts.
    """
    labels = np.asarray(labels, dtype=np.int64)
    top1, topk_ok = correct(topk, labels)
    if intact_topk is None:
        lost = gained = np.zeros(len(labels), dtype=bool)
    else:
        before, _ = correct(intact_topk, labels)
        lost, gained = before & ~top1, ~before & top1

    def per_class(values: np.ndarray) -> np.ndarray:
        counts = np.bincount(labels, weights=values.astype(np.float64), minlength=n_classes)
        return np.append(counts, values.sum())

    n = per_class(np.ones(len(labels), dtype=bool))
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "n": n,
            "top1": per_class(top1) / n,
            "topk": per_class(topk_ok) / n,
            "lost": per_class(lost),
            "gained": per_class(gained),
        }


def tidy(metrics: dict[str, np.ndarray], class_names: tuple[str, ...] | list[str]) -> pd.DataFrame:
    """One row per (class, metric): columns class, class_name, metric, value; class -1 is overall."""
    n_classes = len(class_names)
    rows = [
        (c if c < n_classes else -1, class_names[c] if c < n_classes else "all", name, float(v))
        for name in METRICS
        for c, v in enumerate(metrics[name])
    ]
    return pd.DataFrame(rows, columns=["class", "class_name", "metric", "value"])
