"""Sample thumbnails: reload a run's evaluation split, check its fingerprint, draw a sprite sheet.

A run stores its dataset's name (``fashion-mnist/test``, ``digits/test[:500]``) and the sha256
of its inputs and labels, not the samples themselves. The report reloads the split by name
(the embedded digits always; file-based datasets from ``data_dir`` or ``$LESION_DATA_DIR``),
accepts it only when the fingerprint matches (trying each normalisation, since the fingerprint
covers the normalised inputs) and draws the wanted samples into one PNG sprite sheet.
"""

from __future__ import annotations

import base64
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lesion._errors import LesionError

#: Longest side of a thumbnail in pixels (larger images are downsampled).
THUMB_SIDE = 32
_SPRITE_COLUMNS = 50
_NAME = re.compile(r"^(?P<base>[\w-]+)/(?P<part>\w+)(?:\[:(?P<head>\d+)\])?$")


@dataclass(frozen=True)
class Sprite:
    """Thumbnails of samples in one PNG: sample index -> cell position (row-major, ``columns`` wide)."""

    png: bytes
    cell: tuple[int, int]
    columns: int
    index: dict[int, int]

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")

    def payload(self) -> dict[str, Any]:
        return {"w": self.cell[1], "h": self.cell[0], "columns": self.columns, "index": {str(k): v for k, v in self.index.items()}}


def find_split(dataset: dict[str, Any], data_dir: str | Path | None) -> tuple[Any, str | None]:
    """The run's evaluation split, reloaded and verified, or (None, why not) .

    Raises `LesionError` when ``data_dir`` is given explicitly and the split cannot be loaded from
    it or does not match the run's fingerprint (a wrong directory is a mistake, not a detail).
    """
    from lesion.data import NORMALIZATIONS, load_dataset

    name = str(dataset.get("name", ""))
    wanted = dataset.get("sha256")
    match = _NAME.match(name)
    if match is None:
        return None, f"the run's samples ({name!r}) are a subset that cannot be reloaded by name"
    base, part, head = match["base"], match["part"], match["head"]
    explicit = data_dir is not None
    root = data_dir if explicit else os.environ.get("LESION_DATA_DIR")
    if base != "digits" and root is None:
        return None, (
            f"the run's samples come from {name}, which this report was not given; "
            f"rerun `lesion report ... --data-dir DIR` (DIR holding {base}/) to include them"
        )
    tried = []
    for normalize in (None,) if base in ("digits", "folder") else NORMALIZATIONS:
        try:
            loaded = load_dataset(base, root, normalize=normalize)
        except LesionError as exc:
            if explicit:
                raise LesionError(f"--data-dir: cannot load {name} for the thumbnails: {exc}") from None
            return None, f"{name} could not be loaded from $LESION_DATA_DIR ({exc})"
        split = next((s for s in (loaded.test, loaded.train) if s is not None and s.name == f"{base}/{part}"), None)
        if split is None:
            return None, f"{base} has no split {part!r}"
        split = split.head(int(head)) if head else split
        if split.fingerprint() == wanted:
            return split, None
        tried.append(normalize or "default")
    why = (
        f"{name} loaded from {root} does not match the run's data fingerprint {str(wanted)[:12]}… "
        f"(tried normalisations: {', '.join(tried)})"
    )
    if explicit:
        raise LesionError(f"--data-dir: {why}; give the directory the run was made with")
    return None, why


def draw_sprite(split: Any, samples: list[int]) -> tuple[Sprite | None, str | None]:
    """A sprite sheet of ``samples`` of ``split`` (sample indices), or (None, why not)."""
    from PIL import Image

    if not samples:
        return None, None
    images = [_as_image(split.inputs[i] if _in_memory(split) else split.inputs[i][0]) for i in samples]
    arrays = [image for image in images if image is not None]
    if len(arrays) < len(images):
        return None, f"inputs of shape {tuple(split.input_shape)} are not images"
    stack = np.stack(arrays)  # (S, H, W, C)
    low = stack.min(axis=(0, 1, 2), keepdims=True)
    high = stack.max(axis=(0, 1, 2), keepdims=True)
    pixels = np.round(255 * (stack - low) / np.where(high > low, high - low, 1)).astype(np.uint8)
    h, w = pixels.shape[1:3]
    scale = min(1.0, THUMB_SIDE / max(h, w))
    cell = (max(1, round(h * scale)), max(1, round(w * scale)))
    columns = min(_SPRITE_COLUMNS, len(samples))
    rows = -(-len(samples) // columns)
    mode = "L" if pixels.shape[3] == 1 else "RGB"
    sheet = Image.new(mode, (columns * cell[1], rows * cell[0]))
    for position, image in enumerate(pixels):
        tile = Image.fromarray(image[..., 0] if mode == "L" else image, mode)
        if scale < 1.0:
            tile = tile.resize((cell[1], cell[0]), Image.Resampling.LANCZOS)
        sheet.paste(tile, ((position % columns) * cell[1], (position // columns) * cell[0]))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG", optimize=True)
    return Sprite(buffer.getvalue(), cell, columns, {s: i for i, s in enumerate(samples)}), None


def _in_memory(split: Any) -> bool:
    import torch

    return isinstance(split.inputs, torch.Tensor)


def _as_image(x: Any) -> np.ndarray | None:
    """One input as an (H, W, C) float array, C in {1, 3}; None when it is not an image."""
    array = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
    if array.ndim == 1:
        side = round(len(array) ** 0.5)
        return array.reshape(side, side, 1) if side * side == len(array) else None
    if array.ndim == 2:
        return array[..., None]
    if array.ndim == 3 and array.shape[0] in (1, 3):
        return np.moveaxis(array, 0, -1)
    return None
