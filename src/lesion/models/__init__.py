"""Model zoo by name, a user's own factory by import path, and safe checkpoint loading."""

from __future__ import annotations

from lesion.models._load import (
    CHECKPOINT_FORMAT,
    build_model,
    load_checkpoint,
    load_model,
    model_fingerprint,
)
from lesion.models._meyes import meyes2019_mlp, meyes2020_cnn

MODELS = (
    "meyes2019-mlp",
    "meyes2020-cnn",
    *(f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")),
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "MODELS",
    "build_model",
    "load_checkpoint",
    "load_model",
    "meyes2019_mlp",
    "meyes2020_cnn",
    "model_fingerprint",
]
