"""Embeddings of activations: t-SNE, UMAP, Procrustes alignment, neighbourhood hit.

Pure functions on numpy arrays; nothing here runs a model.
"""

from lesion.embed._align import Alignment, procrustes_align
from lesion.embed._neighbours import neighbourhood_hit, neighbourhood_hit_per_class
from lesion.embed._reduce import (
    INPUT,
    horizontal_reduction,
    tsne,
    umap_embed,
    vertical_reduction,
)

__all__ = [
    "INPUT",
    "Alignment",
    "horizontal_reduction",
    "neighbourhood_hit",
    "neighbourhood_hit_per_class",
    "procrustes_align",
    "tsne",
    "umap_embed",
    "vertical_reduction",
]
