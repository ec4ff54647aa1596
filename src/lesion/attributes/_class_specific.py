"""Class-specific selectivity: how much a unit prefers each class (Zhou et al. 2018)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lesion.attributes._selectivity import _per_class_matrix, _ratio


def class_selectivity(class_means: ArrayLike) -> NDArray[np.float64]:
    """Per (class, unit): ``(mu_c - mu_rest) / (mu_c + mu_rest)``, mu_rest the mean of the other classes' means.

    At the unit's preferred class this is its selectivity index (`lesion.attributes.selectivity`,
    Morcos et al. 2018); the other rows say how selective the unit is for each class in turn, the
    predictor of class-specific importance tested by Zhou et al. (2018). 0 where the denominator is 0.

    Parameters
    ----------
    class_means : array_like, shape (n_classes, n_units)

    Returns
    -------
    ndarray of float64, shape (n_classes, n_units)

    >>> class_selectivity([[3.0, 1.0], [1.0, 1.0]]).tolist()
    [[0.5, 0.0], [-0.5, 0.0]]
    """
    means = _per_class_matrix("class_means", class_means)
    rest = (means.sum(axis=0, keepdims=True) - means) / (means.shape[0] - 1)
    return _ratio(means - rest, means + rest)
