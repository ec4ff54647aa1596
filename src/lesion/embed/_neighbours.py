"""Neighbourhood hit: how well an embedding keeps classes apart."""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from sklearn.neighbors import NearestNeighbors

from lesion._errors import LesionError, check_int
from lesion.embed._arrays import points


def neighbourhood_hit(embedding: ArrayLike, labels: ArrayLike, k: int = 6) -> float:
    """Mean over points of the fraction of their k nearest neighbours that share their label.

    The NH score of Meyes et al. (2020), Section 3.2 (after Rauber et al. 2016): 1 when
    every point's neighbourhood is pure, about the share of the largest class when
    labels are scattered at random. Neighbours are Euclidean; a point is never its own
    neighbour (a duplicate of it is); ties at the k-th distance are broken by
    ``sklearn.neighbors.NearestNeighbors``.

    Parameters
    ----------
    embedding : array_like, shape (N, d)
        E.g. a 2-D embedding (N, 2).
    labels : array_like, shape (N,)
        Class of each point (any comparable values).
    k : int, default=6
        Neighbours per point (the paper's choice), 1 <= k < N.

    Returns
    -------
    float
    """
    return float(_hits(embedding, labels, k)[0].mean())


def neighbourhood_hit_per_class(
    embedding: ArrayLike, labels: ArrayLike, k: int = 6
) -> pd.DataFrame:
    """`neighbourhood_hit` averaged over the points of each class separately.

    Parameters
    ----------
    embedding : array_like, shape (N, d)
    labels : array_like, shape (N,)
    k : int, default=6

    Returns
    -------
    pandas.DataFrame
        Columns ``class`` (sorted labels), ``neighbourhood_hit``, ``n_points``.
    """
    hits, classes = _hits(embedding, labels, k)
    table = pd.DataFrame({"class": classes, "hit": hits})
    per_class = table.groupby("class", sort=True)["hit"].agg(["mean", "size"]).reset_index()
    return per_class.rename(columns={"mean": "neighbourhood_hit", "size": "n_points"})


def _hits(embedding: ArrayLike, labels: ArrayLike, k: int) -> tuple[NDArray[np.float64], NDArray]:
    """Per point, the share of its k nearest neighbours with its label; and the labels."""
    coords = points("embedding", embedding)
    classes = np.asarray(labels)
    n = coords.shape[0]
    if classes.shape != (n,):
        raise LesionError(f"labels: expected shape ({n},), got {classes.shape}")
    check_int("k", k, 1, n - 1, why=" (fewer than the points)")
    neighbours = NearestNeighbors(n_neighbors=k).fit(coords).kneighbors(return_distance=False)
    return (classes[neighbours] == classes[:, None]).mean(axis=1), classes
