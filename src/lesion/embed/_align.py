"""Procrustes alignment of one embedding onto another, in the reference's own frame."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.linalg import orthogonal_procrustes

from lesion._errors import LesionError
from lesion.embed._arrays import points


@dataclass(frozen=True)
class Alignment:
    """`moving` mapped onto `reference`: ``embedding = scale * moving @ rotation + translation``.

    Attributes
    ----------
    embedding : ndarray of float64, shape (N, d)
        The aligned points, in the reference's coordinates.
    disparity : float
        Residual sum of squares divided by the reference's centred sum of squares, in
        [0, 1]; equal to the disparity of ``scipy.spatial.procrustes``.
    scale : float
    rotation : ndarray of float64, shape (d, d)
        Orthogonal (a rotation, possibly with a reflection).
    translation : ndarray of float64, shape (d,)
    """

    embedding: NDArray[np.float64]
    disparity: float
    scale: float
    rotation: NDArray[np.float64]
    translation: NDArray[np.float64]


def procrustes_align(reference: ArrayLike, moving: ArrayLike) -> Alignment:
    """Shift, scale, rotate and reflect `moving` to best match `reference` point by point.

    Solves ``min ||reference - (s * moving @ R + t)||`` over a scale s > 0, an orthogonal
    R (``scipy.linalg.orthogonal_procrustes``) and a translation t. Unlike
    ``scipy.spatial.procrustes``, which returns both sets standardised, the result is
    `moving` expressed in `reference`'s own frame, so a sequence of layer embeddings can
    be drawn on common axes (Meyes et al. 2020, Section 3.2).

    Parameters
    ----------
    reference : array_like, shape (N, d)
    moving : array_like, shape (N, d)
        Row i of both is the same sample. Neither may be a single repeated point.

    Returns
    -------
    Alignment
    """
    target = points("reference", reference)
    source = points("moving", moving, n=target.shape[0])
    if source.shape != target.shape:
        raise LesionError(
            f"moving: expected the shape of reference {target.shape}, got {source.shape}"
        )
    target_mean, source_mean = target.mean(axis=0), source.mean(axis=0)
    a, b = target - target_mean, source - source_mean
    a_norm, b_norm = float((a**2).sum()), float((b**2).sum())
    for name, norm in (("reference", a_norm), ("moving", b_norm)):
        if norm == 0:
            raise LesionError(f"{name}: expected points with some spread, got all points equal")
    rotation, singular_sum = orthogonal_procrustes(b, a)
    scale = float(singular_sum) / b_norm
    translation = target_mean - scale * source_mean @ rotation
    aligned = scale * source @ rotation + translation
    disparity = float(((target - aligned) ** 2).sum()) / a_norm
    return Alignment(aligned, disparity, scale, rotation, translation)
