"""The analyses of Meyes et al. (2020) on a finished run and a captured activation matrix.

Pure functions from a :class:`~lesion.store.Run` and :class:`~lesion.engine._capture.Activations`
to tidy DataFrames; nothing here runs the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from lesion.attributes import (
    ClassMeanAccumulator,
    most_selective_counts,
    selectivity,
)
from lesion.engine._capture import Activations
from lesion.stats import Correlation, correlate

#: Rows of the activation matrix read at once when accumulating class means.
CHUNK_ROWS = 1024


def error_vs_drop(class_accuracy: pd.Series, total_change: pd.Series) -> Correlation:
    """Correlation of each class's original error with its accuracy drop under the layer lesions.

    ``class_accuracy``: intact top-1 per class; ``total_change``: the summed per-layer mean
    change (negative = damage). The drop is ``-total_change``, so a positive coefficient says
    that harder classes lose more (Meyes et al. 2020, Section 4.1).
    """
    error = 1 - class_accuracy.loc[total_change.index]
    return correlate(error.to_numpy(), -total_change.to_numpy())


def activation_selectivity(activations: Activations, labels: np.ndarray, n_classes: int, layers: Sequence[str]) -> pd.DataFrame:
    """AS of every neuron of ``layers`` from class means streamed over the captured matrix.

    Returns
    -------
    DataFrame
        One row per neuron (columns of :meth:`Activations.neurons`) plus ``AS`` and
        ``preferred_class`` (−1 where all class means are equal, e.g. a dead neuron).
    """
    neurons = activations.neurons(layers)
    columns = neurons["column"].to_numpy()
    accumulator = ClassMeanAccumulator(n_classes, len(columns))
    for start in range(0, activations.n_samples, CHUNK_ROWS):
        stop = start + CHUNK_ROWS
        accumulator.update(np.asarray(activations.values[start:stop][:, columns], dtype=np.float64), labels[start:stop])
    values = selectivity(accumulator.means())
    return neurons.assign(AS=values["selectivity"].to_numpy(), preferred_class=values["preferred_class"].to_numpy())


def neuron_table(as_table: pd.DataFrame, aes_table: pd.DataFrame) -> pd.DataFrame:
    """AS per neuron joined with its unit's AES: a kernel's AES is shared by all its spatial neurons.

    Returns
    -------
    DataFrame
        ``as_table``'s rows and columns plus ``aes``, ``aes_scaled``, ``aes_class``, ``aes_sign``
        (0 / −1 for a neuron whose unit has no single-unit lesion).
    """
    unit_values = aes_table[["layer", "unit", "aes", "aes_scaled", "aes_class", "sign"]].rename(columns={"sign": "aes_sign"})
    merged = as_table.merge(unit_values, on=["layer", "unit"], how="left", validate="many_to_one")
    return merged.fillna({"aes": 0.0, "aes_scaled": 0.0, "aes_class": -1, "aes_sign": 0}).astype(
        {"aes_class": np.int64, "aes_sign": np.int64}
    )


def selective_counts(neurons: pd.DataFrame, class_names: Sequence[str]) -> pd.DataFrame:
    """Per class, how many neurons are most selective for it by AS and by AES.

    Returns
    -------
    DataFrame
        ``class``, ``class_name``, ``n_as``, ``n_aes``, ``n_aes_negative``, ``n_aes_positive``.
    """
    n_classes = len(class_names)
    by_as = most_selective_counts(neurons["AS"], neurons["preferred_class"], n_classes)
    by_aes = most_selective_counts(neurons["aes"], neurons["aes_class"], n_classes)
    return pd.DataFrame(
        {
            "class": by_as["class"],
            "class_name": list(class_names),
            "n_as": by_as["n_neurons"],
            "n_aes": by_aes["n_neurons"],
            "n_aes_negative": by_aes["n_negative"],
            "n_aes_positive": by_aes["n_positive"],
        }
    )


def main_fraction(fractions: Sequence[float]) -> float:
    """The fraction the paper reports (0.5) if planned, else the largest planned."""
    return 0.5 if 0.5 in fractions else max(fractions)
