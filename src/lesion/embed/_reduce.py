"""Two-dimensional embeddings: t-SNE, UMAP, and the horizontal / vertical reductions."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits

from lesion._errors import LesionError, check_int
from lesion.embed._align import procrustes_align
from lesion.embed._arrays import points

INPUT = "input"
"""Key of the raw data's embedding in the result of `horizontal_reduction`."""

INPUT_MIN_DIST = 0.8
"""UMAP ``min_dist`` of the raw-data embedding that initialises every layer's embedding."""


def tsne(x: ArrayLike, seed: int = 0, perplexity: float = 30.0) -> NDArray[np.float32]:
    """t-SNE embedding in 2-D (scikit-learn, PCA initialisation), deterministic for a seed.

    Runs single-threaded (OpenMP limited to one thread), so that the result does not
    depend on how partial sums are split among threads.

    Parameters
    ----------
    x : array_like, shape (N, d)
    seed : int, default=0
    perplexity : float, default=30.0
        Must be smaller than N.

    Returns
    -------
    ndarray of float32, shape (N, 2)
    """
    data = points("x", x)
    if not 0 < perplexity < data.shape[0]:
        raise LesionError(
            f"perplexity: expected a value in (0, {data.shape[0]}) (below the number of samples), got {perplexity!r}"
        )
    model = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    with threadpool_limits(limits=1, user_api="openmp"):
        return model.fit_transform(data).astype(np.float32)


def umap_embed(
    x: ArrayLike,
    seed: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    init: ArrayLike | None = None,
) -> NDArray[np.float32]:
    """UMAP embedding in 2-D (umap-learn), deterministic for a seed.

    Seeding makes umap-learn run single-threaded. The first call in a process compiles
    umap-learn's numba code, which takes a while.

    Parameters
    ----------
    x : array_like, shape (N, d)
    seed : int, default=0
    n_neighbors : int, default=15
        2 <= n_neighbors < N.
    min_dist : float, default=0.1
    init : array_like, shape (N, 2), optional
        Starting coordinates; by default UMAP's spectral initialisation.

    Returns
    -------
    ndarray of float32, shape (N, 2)
    """
    import umap  # deferred: importing umap-learn (numba) takes seconds

    data = points("x", x, dtype=np.float32)  # umap-learn works in float32
    n = data.shape[0]
    check_int("n_neighbors", n_neighbors, 2, n - 1, why=" (below the number of samples)")
    start = "spectral" if init is None else points("init", init, n=n)
    if not isinstance(start, str) and start.shape[1] != 2:
        raise LesionError(f"init: expected shape ({n}, 2), got {start.shape}")
    model = umap.UMAP(
        n_components=2,
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        init=start,
        random_state=seed,
        n_jobs=1,
    )
    return np.asarray(model.fit_transform(data), dtype=np.float32)


def horizontal_reduction(
    layer_activations: Mapping[str, ArrayLike],
    raw: ArrayLike,
    seed: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
) -> dict[str, NDArray[np.float32]]:
    """Embed the samples once per layer, all starting from one layout and aligned in turn.

    Meyes et al. (2020), Section 3.2: the raw data is embedded with UMAP
    (``min_dist=0.8``); that embedding initialises the UMAP embedding of every layer's
    activations, and each layer's embedding is Procrustes-aligned (`procrustes_align`) to
    the previous one's aligned embedding, the first layer's to the raw data's.

    Parameters
    ----------
    layer_activations : mapping name -> array_like, shape (N, d_l)
        Activations of each layer in network order (flattened per sample).
    raw : array_like, shape (N, d_0)
        The input samples, flattened.
    seed : int, default=0
    n_neighbors : int, default=15
    min_dist : float, default=0.1
        UMAP parameters of the layer embeddings (umap-learn's defaults, as in the paper).

    Returns
    -------
    dict name -> ndarray of float32, shape (N, 2)
        ``"input"`` first, then the layers in the given order.
    """
    if INPUT in layer_activations:
        raise LesionError(
            f"layer_activations: expected layer names other than {INPUT!r} (it names the raw "
            f"data's embedding), got {list(layer_activations)}"
        )
    start = umap_embed(raw, seed=seed, n_neighbors=n_neighbors, min_dist=INPUT_MIN_DIST)
    embeddings = {INPUT: start}
    previous = start
    for name, activations in layer_activations.items():
        layer = points(f"layer_activations[{name!r}]", activations, start.shape[0], np.float32)
        embedded = umap_embed(layer, seed, n_neighbors, min_dist, init=start)
        previous = procrustes_align(previous, embedded).embedding.astype(np.float32)
        embeddings[name] = previous
    return embeddings


def vertical_reduction(
    activations: ArrayLike,
    seed: int = 0,
    max_samples: int | None = None,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
) -> NDArray[np.float32]:
    """Embed the neurons: one point per neuron, from its responses to the samples.

    Meyes et al. (2020), Section 3.2 ("vertical reduction"): UMAP of the transposed
    activation matrix, so neurons that respond alike land close together.

    Parameters
    ----------
    activations : array_like, shape (N, n_neurons)
        Activations of all neurons of interest (e.g. every layer, concatenated).
    seed : int, default=0
        Seeds UMAP and the sample subset.
    max_samples : int, optional
        Use at most this many samples (a seeded random subset, kept in order) as the
        neurons' features, for speed. Default: all.
    n_neighbors : int, default=15
    min_dist : float, default=0.1

    Returns
    -------
    ndarray of float32, shape (n_neurons, 2)
    """
    data = points("activations", activations, dtype=np.float32)
    if max_samples is not None and check_int("max_samples", max_samples, 1) < data.shape[0]:
        rng = np.random.default_rng(seed)
        data = data[np.sort(rng.choice(data.shape[0], size=max_samples, replace=False))]
    return umap_embed(data.T, seed=seed, n_neighbors=n_neighbors, min_dist=min_dist)
