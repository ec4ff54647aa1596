"""Everything derived from outcomes: top-1 / top-k accuracy overall and per class, samples lost and gained.

An *outcome* is the per-sample top-k prediction matrix ``topk`` of shape (N, k), best class first.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Metric names of :func:`class_metrics`, in table order.
METRICS = ("n", "top1", "topk", "lost", "gained")
#: What :func:`correct_counts` counts, in its order: samples right at top-1, right at top-k, lost, gained.
COUNTS = ("top1", "topk", "lost", "gained")


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


def correct_counts(
    tops: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    intact_topk: np.ndarray | None = None,
) -> np.ndarray:
    """:data:`COUNTS` of R outcomes at once, per class and overall: int64 of shape (R, 4, n_classes + 1).

    ``tops``: (R, N, k) top-k predictions; ``labels`` (N,); ``intact_topk`` (N, k) as in
    :func:`class_metrics`, from whose counts (:func:`metrics_from_counts`) its values follow exactly.
    """
    labels = np.asarray(labels, dtype=np.int64)
    tops = np.asarray(tops)
    top1 = tops[:, :, 0] == labels
    if intact_topk is None:
        lost = gained = np.zeros_like(top1)
    else:
        before = np.asarray(intact_topk)[:, 0] == labels
        lost, gained = before & ~top1, ~before & top1
    exact = np.float32 if len(labels) < 2**24 else np.float64  # sums of 0/1 below 2**24 are exact in float32
    in_topk = top1.copy()
    for j in range(1, tops.shape[2]):  # k column passes: far faster than .any(axis=2) over a short last axis
        in_topk |= tops[:, :, j] == labels
    hits = np.stack([top1, in_topk, lost, gained], axis=1).astype(exact)  # (R, 4, N)
    member = np.zeros((len(labels), n_classes + 1), dtype=exact)
    member[np.arange(len(labels)), labels] = 1.0
    member[:, n_classes] = 1.0
    return np.rint(hits @ member).astype(np.int64)


def metrics_from_counts(counts: np.ndarray, n: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`class_metrics`'s dict (each value (..., n_classes + 1)) from :func:`correct_counts`
    (..., 4, n_classes + 1) and the per-class sample counts ``n`` (n_classes + 1,)."""
    counts = counts.astype(np.float64)
    n = np.broadcast_to(np.asarray(n, dtype=np.float64), counts[..., 0, :].shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "n": n,
            "top1": counts[..., 0, :] / n,
            "topk": counts[..., 1, :] / n,
            "lost": counts[..., 2, :],
            "gained": counts[..., 3, :],
        }


def class_sizes(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Samples per class and in all, (n_classes + 1,) float64."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(np.float64)
    return np.append(counts, counts.sum())


def tidy(metrics: dict[str, np.ndarray], class_names: tuple[str, ...] | list[str]) -> pd.DataFrame:
    """One row per (class, metric): columns class, class_name, metric, value; class -1 is overall."""
    n_classes = len(class_names)
    rows = [
        (c if c < n_classes else -1, class_names[c] if c < n_classes else "all", name, float(v))
        for name in METRICS
        for c, v in enumerate(metrics[name])
    ]
    return pd.DataFrame(rows, columns=["class", "class_name", "metric", "value"])
