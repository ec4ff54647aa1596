"""Class selectivity of units: of their activations (AS) and of their lesion's effect (AES)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from lesion._errors import LesionError, check_int
from lesion.attributes._arrays import as_numpy

NO_CLASS = -1
"""Class index reported where no class stands out (all classes equal)."""


class ClassMeanAccumulator:
    """Per-class mean activation of each unit, accumulated batch by batch (float64).

    Parameters
    ----------
    n_classes : int
        Number of classes; labels lie in 0 .. n_classes-1.
    n_units : int
        Number of units (columns of each activation batch).

    Examples
    --------
    >>> acc = ClassMeanAccumulator(n_classes=2, n_units=1)
    >>> acc.update([[1.0], [3.0]], [0, 0])
    >>> acc.update([[5.0]], [1])
    >>> acc.means().tolist()
    [[2.0], [5.0]]
    """

    def __init__(self, n_classes: int, n_units: int) -> None:
        n_classes = check_int("n_classes", n_classes, 1)
        n_units = check_int("n_units", n_units, 1)
        self._sums = np.zeros((n_classes, n_units))
        self._counts = np.zeros(n_classes, dtype=np.int64)

    @property
    def counts(self) -> NDArray[np.int64]:
        """Samples seen per class, shape (n_classes,)."""
        return self._counts.copy()

    def update(self, activations: ArrayLike, labels: ArrayLike) -> None:
        """Add a batch.

        Parameters
        ----------
        activations : array_like or torch.Tensor, shape (B, n_units)
        labels : array_like of int or torch.Tensor, shape (B,)
            Class of each sample, in 0 .. n_classes-1.
        """
        acts, labs = self._checked(activations, labels)
        order = np.argsort(labs, kind="stable")
        classes, starts, sizes = np.unique(labs[order], return_index=True, return_counts=True)
        if classes.size:
            self._sums[classes] += np.add.reduceat(acts[order], starts, axis=0)
            self._counts[classes] += sizes

    def means(self) -> NDArray[np.float64]:
        """Mean activation per class and unit, shape (n_classes, n_units); NaN rows for classes not seen."""
        seen = (self._counts > 0)[:, None]
        return np.divide(
            self._sums, self._counts[:, None], out=np.full(self._sums.shape, np.nan), where=seen
        )

    def _checked(
        self, activations: ArrayLike, labels: ArrayLike
    ) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        n_classes, n_units = self._sums.shape
        acts = as_numpy(activations)
        labs = as_numpy(labels, dtype=None)
        if acts.ndim != 2 or acts.shape[1] != n_units:
            raise LesionError(f"activations: expected shape (B, {n_units}), got {acts.shape}")
        if labs.shape != (acts.shape[0],) or not np.issubdtype(labs.dtype, np.integer):
            raise LesionError(
                f"labels: expected integer labels of shape ({acts.shape[0]},), "
                f"got dtype {labs.dtype} shape {labs.shape}"
            )
        if labs.size and (labs.min() < 0 or labs.max() >= n_classes):
            raise LesionError(
                f"labels: expected classes in 0..{n_classes - 1}, got values in {labs.min()}..{labs.max()}"
            )
        return acts, labs.astype(np.int64)


def class_means(activations: ArrayLike, labels: ArrayLike, n_classes: int) -> NDArray[np.float64]:
    """Per-class mean activation of each unit (float64 accumulation).

    For data too large to hold at once, feed batches to `ClassMeanAccumulator` instead.

    Parameters
    ----------
    activations : array_like or torch.Tensor, shape (N, n_units)
    labels : array_like of int or torch.Tensor, shape (N,)
    n_classes : int

    Returns
    -------
    ndarray of float64, shape (n_classes, n_units)
        NaN rows for classes without samples.
    """
    acts = as_numpy(activations)
    if acts.ndim != 2:
        raise LesionError(f"activations: expected shape (N, n_units), got {acts.shape}")
    accumulator = ClassMeanAccumulator(n_classes, acts.shape[1])
    accumulator.update(acts, labels)
    return accumulator.means()


def selectivity(class_means: ArrayLike) -> pd.DataFrame:
    """Activation selectivity (AS) of each unit and its preferred class.

    ``AS = (mu_max - mu_rest) / (mu_max + mu_rest)`` with mu_max the unit's highest
    class mean and mu_rest the mean of the other classes' means (Morcos et al. 2018;
    Meyes et al. 2020, Section 3.2), set to 0 where the denominator is 0. With
    non-negative activations (e.g. after ReLU) AS lies in [0, 1]: 0 for a unit that
    responds equally to all classes, 1 for one that responds to a single class only.
    Activations that can be negative may give values outside [0, 1]; they are returned
    as computed.

    Parameters
    ----------
    class_means : array_like, shape (n_classes, n_units)
        From `class_means` or `ClassMeanAccumulator.means`; at least 2 classes, no NaN.

    Returns
    -------
    pandas.DataFrame
        Columns ``unit``, ``selectivity``, ``preferred_class`` (argmax of the class
        means, lowest index on ties; -1 where all class means are equal, e.g. a dead unit).
    """
    means = _per_class_matrix("class_means", class_means)
    mu_max = means.max(axis=0)
    mu_rest = (means.sum(axis=0) - mu_max) / (means.shape[0] - 1)
    return pd.DataFrame(
        {
            "unit": np.arange(means.shape[1]),
            "selectivity": _ratio(mu_max - mu_rest, mu_max + mu_rest),
            "preferred_class": _standout(means, means.argmax(axis=0)),
        }
    )


def ablation_effect_selectivity(delta: ArrayLike) -> pd.DataFrame:
    """Ablation effect selectivity (AES): how selectively a unit's lesion affects one class.

    Meyes et al. (2020), Section 3.2 define ``AES = (D_max - D_rest) / (D_max + D_rest)``
    with D_max "the highest class-specific change in accuracy" and D_rest the average
    change over the other classes, say that AES "can be positive or negative", and split
    the scale into a negative and a positive part, each rescaled to [0, 1] by its extreme;
    their figures colour units by negative (red) or positive (blue) impact on the class.

    Reading: "highest change" is the change of largest magnitude (the most affected
    class), since lesions mostly reduce accuracy and the most negative change is the one
    that matters; the sign says whether the lesion hurt (-) or helped (+) that class. The
    literal ratio of signed changes cannot carry that sign (two negative changes give a
    positive ratio) and is unbounded when the other classes move the opposite way
    (its denominator crosses 0). So the ratio is taken of magnitudes, like AS of
    activations, and the sign of D_max attached::

        m_c   = |delta_c|,   c* = argmax_c m_c            (lowest index on ties)
        S     = (m_c* - mean_{c != c*} m_c) / (m_c* + mean_{c != c*} m_c)   in [0, 1]
        aes   = sign(delta_c*) * S                                           in [-1, 1]

    S is 0 where the denominator is 0 (the paper's rule). Where all changes share one
    sign this is exactly the paper's formula, with the sign added: e.g. changes
    (-0.5, -0.1, -0.1) give (-0.5 - -0.1) / (-0.5 + -0.1) = 2/3 and ``aes = -2/3``.

    Parameters
    ----------
    delta : array_like, shape (n_units, n_classes)
        Class-specific change in accuracy after lesioning each unit (lesioned minus
        intact; negative = damage). At least 2 classes, no NaN.

    Returns
    -------
    pandas.DataFrame
        One row per unit with columns

        - ``unit``
        - ``aes_class``: c*, the class the lesion affects most; -1 where all |delta_c| are
          equal (no class stands out, including a lesion that changes nothing)
        - ``delta_max``: delta_c*, signed (at the lowest-index class of largest |delta|)
        - ``delta_rest``: mean of the other classes' signed changes (the paper's D_rest)
        - ``aes``: the signed selectivity in [-1, 1]
        - ``sign``: -1 (the lesion hurt c*), +1 (it helped), 0 (no class stands out)
        - ``aes_scaled``: |aes| divided by the largest |aes| among the units of the same
          sign in this call, in [0, 1] (the paper's two re-scaled halves; pass all units
          to be compared, e.g. of every layer, in one call)
    """
    changes = _per_class_matrix("delta", delta, classes_axis=1)
    magnitude = np.abs(changes)
    top = magnitude.argmax(axis=1)
    rows = np.arange(changes.shape[0])
    n_rest = changes.shape[1] - 1
    m_max = magnitude[rows, top]
    m_rest = (magnitude.sum(axis=1) - m_max) / n_rest
    d_max = changes[rows, top]
    aes_class = _standout(magnitude.T, top)
    sign = np.where(aes_class == NO_CLASS, 0, np.sign(d_max)).astype(np.int64)
    aes = sign * _ratio(m_max - m_rest, m_max + m_rest)
    return pd.DataFrame(
        {
            "unit": rows,
            "aes_class": aes_class,
            "delta_max": d_max,
            "delta_rest": (changes.sum(axis=1) - d_max) / n_rest,
            "aes": aes,
            "sign": sign,
            "aes_scaled": _rescaled_by_sign(aes, sign),
        }
    )


def most_selective_counts(
    values: ArrayLike,
    preferred_class: ArrayLike,
    n_classes: int,
    weights: ArrayLike | None = None,
) -> pd.DataFrame:
    """Per class, how many neurons are most selective for it.

    Meyes et al. (2020), Section 4.3: the number of neurons whose preferred class (of AS)
    or most affected class (of AES) is each class. A neuron counts when its class is a
    real class (not -1) and its value is finite and nonzero (a selectivity of 0 prefers
    nothing).

    Parameters
    ----------
    values : array_like of float, shape (n,)
        Selectivity per unit, e.g. ``selectivity`` (AS) or ``aes`` (signed AES).
    preferred_class : array_like of int, shape (n,)
        ``preferred_class`` or ``aes_class`` per unit, in -1 .. n_classes-1.
    n_classes : int
    weights : array_like of int, shape (n,), optional
        How many neurons each unit stands for, e.g. 25 for a 5x5 conv kernel whose
        neurons share one value. Default: 1 each.

    Returns
    -------
    pandas.DataFrame
        Columns ``class`` (0 .. n_classes-1), ``n_neurons``, and its split by the sign of
        the value, ``n_negative`` and ``n_positive`` (for AES: hurt / helped by the lesion).
    """
    vals = as_numpy(values).ravel()
    classes = as_numpy(preferred_class, dtype=None).ravel()
    counts = (
        np.ones(vals.shape, dtype=np.int64)
        if weights is None
        else as_numpy(weights, dtype=None).ravel()
    )
    _check_counts_input(vals, classes, counts, n_classes)
    counted = (classes != NO_CLASS) & np.isfinite(vals) & (vals != 0)

    def tally(mask: NDArray[np.bool_]) -> NDArray[np.int64]:
        hits = counted & mask
        return np.bincount(classes[hits], weights=counts[hits], minlength=n_classes).astype(
            np.int64
        )

    negative, positive = tally(vals < 0), tally(vals > 0)
    return pd.DataFrame(
        {
            "class": np.arange(n_classes),
            "n_neurons": negative + positive,
            "n_negative": negative,
            "n_positive": positive,
        }
    )


def _check_counts_input(
    vals: NDArray[np.float64],
    classes: NDArray,
    counts: NDArray,
    n_classes: int,
) -> None:
    check_int("n_classes", n_classes, 1)
    if classes.shape != vals.shape or counts.shape != vals.shape:
        raise LesionError(
            "values, preferred_class, weights: expected the same length, got "
            f"{vals.size}, {classes.size}, {counts.size}"
        )
    if not np.issubdtype(classes.dtype, np.integer) or np.any(
        (classes < NO_CLASS) | (classes >= n_classes)
    ):
        raise LesionError(
            f"preferred_class: expected integers in -1..{n_classes - 1}, got {classes!r}"
        )
    if not np.issubdtype(counts.dtype, np.integer) or np.any(counts < 0):
        raise LesionError(f"weights: expected non-negative integers, got {counts!r}")


def _per_class_matrix(name: str, values: ArrayLike, classes_axis: int = 0) -> NDArray[np.float64]:
    matrix = as_numpy(values)
    axes = ("n_classes", "n_units") if classes_axis == 0 else ("n_units", "n_classes")
    if matrix.ndim != 2 or matrix.shape[classes_axis] < 2:
        raise LesionError(
            f"{name}: expected shape ({', '.join(axes)}) with at least 2 classes, got {matrix.shape}"
        )
    if np.isnan(matrix).any():
        raise LesionError(f"{name}: expected no NaN (e.g. a class without samples), got NaN values")
    return matrix


def _ratio(numerator: NDArray[np.float64], denominator: NDArray[np.float64]) -> NDArray[np.float64]:
    """numerator / denominator, 0 where the denominator is 0."""
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator != 0)


def _standout(per_class: NDArray[np.float64], top: NDArray[np.intp]) -> NDArray[np.int64]:
    """`top` (the best class per unit), NO_CLASS where all classes are equal; classes on axis 0."""
    flat = per_class.max(axis=0) == per_class.min(axis=0)
    return np.where(flat, NO_CLASS, top).astype(np.int64)


def _rescaled_by_sign(aes: NDArray[np.float64], sign: NDArray[np.int64]) -> NDArray[np.float64]:
    scaled = np.zeros_like(aes)
    for side in (-1, 1):
        mask = sign == side
        if mask.any():
            scaled[mask] = np.abs(aes[mask]) / np.abs(aes[mask]).max()
    return scaled
