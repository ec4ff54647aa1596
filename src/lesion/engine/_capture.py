"""Activation capture: every neuron of chosen layers over a split, streamed into a memory-mapped ``.npy``.

One forward pass per data batch; forward hooks copy each chosen module's output, flattened per
sample, into its columns of a samples × neurons matrix written batch by batch with
``numpy.lib.format.open_memmap``, so the matrix never has to fit in memory. A JSON file beside
the ``.npy`` keeps the layer names, their column boundaries and their per-sample shapes, so
:func:`load_activations` reopens a capture without running the model.

A convolution's output (C, H, W) is flattened channel-major: channel c owns the columns
``c*H*W .. (c+1)*H*W - 1`` of its layer, one neuron per spatial position. An
``nn.MultiheadAttention`` point records its heads before the output projection, head-major
(num_heads, L, head_dim), so ``unit`` in :meth:`Activations.neurons` is the head.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from numpy.lib.format import open_memmap
from torch import Tensor, nn

from lesion._errors import LesionError, closest
from lesion._forward import HEAD_DIM, Tap, tapped
from lesion._progress import progress_bar
from lesion._units import never_runs
from lesion.data import Split
from lesion.engine._reference import eval_mode, model_device

DTYPES = ("float32", "float16")
CAPTURE_FORMAT = "lesion-activations/1"

Transform = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Activations:
    """A captured samples × neurons matrix and where each layer's neurons lie in it.

    Attributes
    ----------
    values : numpy.memmap of shape (N, n_neurons)
        float32 (or float16), read-only; row i is sample i of the split, in order.
    layers : tuple of str
        The captured layers (their labels), in column order.
    slices : dict of str -> slice
        Each layer's columns.
    shapes : dict of str -> tuple of int
        Each layer's output shape per sample, e.g. (64, 14, 14) or (512,).
    path : Path
        The ``.npy`` file.
    """

    values: np.memmap
    layers: tuple[str, ...]
    slices: dict[str, slice]
    shapes: dict[str, tuple[int, ...]]
    path: Path

    @property
    def n_samples(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_neurons(self) -> int:
        return int(self.values.shape[1])

    def layer(self, name: str) -> np.ndarray:
        """The (N, n_l) view of one layer's columns."""
        if name not in self.slices:
            raise LesionError(f"layer {name!r} was not captured; captured are {list(self.layers)}{closest(name, self.layers)}")
        return self.values[:, self.slices[name]]

    def neurons(self, layers: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per neuron of ``layers`` (default: all), in column order.

        Columns: ``column`` (in :attr:`values`), ``layer``, ``unit`` (the channel of a
        convolution, the neuron itself for a flat output), ``position`` (flat spatial index
        within the channel; 0 for a flat output).
        """
        frames = []
        for name in self.layers if layers is None else layers:
            columns = np.arange(self.slices[name].start, self.slices[name].stop)
            per_unit = math.prod(self.shapes[name][1:])
            local = columns - columns[0]
            frames.append(
                pd.DataFrame({"column": columns, "layer": name, "unit": local // per_unit, "position": local % per_unit})
            )
        return pd.concat(frames, ignore_index=True)


def capture_activations(
    model: nn.Module,
    split: Split,
    points: Sequence[str] | Mapping[str, str],
    path: str | Path,
    *,
    transforms: Mapping[str, Transform] | None = None,
    batch_size: int = 256,
    dtype: str = "float32",
    progress: bool = False,
) -> Activations:
    """Record every neuron of the chosen modules over ``split`` into the ``.npy`` file ``path``.

    Parameters
    ----------
    model : nn.Module
        Run in eval mode under ``torch.inference_mode``; apply lesions around the call with
        :func:`lesion.lesioned` to capture a lesioned network.
    split : Split
        N samples; row i of the result is sample i.
    points : sequence of module names, or mapping of label -> module name
        The modules whose outputs are captured, in column order, e.g.
        ``{"conv1": "pool1", "fc1": "relu4", "out": "out"}`` (a layer's neurons after its
        pooling or ReLU).
    path : path
        The ``.npy`` file (written as ``<stem>.partial.npy`` and renamed when complete), with
        ``<stem>.json`` beside it.
    transforms : mapping of label -> callable, optional
        Applied to that module's output (B, ...) before it is stored, e.g.
        ``{"out": lambda z: torch.log_softmax(z, 1)}``.
    batch_size : int, default=256
    dtype : {"float32", "float16"}, default="float32"
    progress : bool, default=False

    Returns
    -------
    Activations
        ``values`` of shape (N, sum of the layers' neurons per sample), memory-mapped read-only.
    """
    named = _points(model, points)
    transforms = dict(transforms or {})
    unknown = sorted(set(transforms) - set(named))
    if unknown:
        raise LesionError(f"transforms name labels {unknown} that are not captured; captured are {list(named)}")
    if dtype not in DTYPES:
        raise LesionError(f"dtype must be one of {DTYPES}, got {dtype!r}{closest(str(dtype), DTYPES)}")
    if batch_size < 1:
        raise LesionError(f"batch_size must be >= 1, got {batch_size}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial.npy")
    shapes = _write(model, split, named, transforms, partial, batch_size, dtype, progress)
    os.replace(partial, path)
    slices = _slices(shapes)
    meta = {
        "format": CAPTURE_FORMAT,
        "layers": list(named),
        "modules": named,
        "shapes": {name: list(shape) for name, shape in shapes.items()},
        "columns": {name: [s.start, s.stop] for name, s in slices.items()},
        "split": split.name,
        "n_samples": len(split),
    }
    _sidecar(path).write_text(json.dumps(meta, indent=1))
    return load_activations(path)


def load_activations(path: str | Path) -> Activations:
    """Reopen a capture written by :func:`capture_activations` (read-only memory map)."""
    path = Path(path)
    sidecar = _sidecar(path)
    if not path.is_file() or not sidecar.is_file():
        raise LesionError(f"no complete activation capture at {str(path)!r} (needs the .npy and {sidecar.name})")
    meta = json.loads(sidecar.read_text())
    if meta.get("format") != CAPTURE_FORMAT:
        raise LesionError(f"{sidecar} is not a lesion activation capture (format {meta.get('format')!r})")
    values = np.load(path, mmap_mode="r")
    slices = {name: slice(*meta["columns"][name]) for name in meta["layers"]}
    shapes = {name: tuple(meta["shapes"][name]) for name in meta["layers"]}
    return Activations(values, tuple(meta["layers"]), slices, shapes, path)


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def _points(model: nn.Module, points: Sequence[str] | Mapping[str, str]) -> dict[str, str]:
    named = dict(points) if isinstance(points, Mapping) else {name: name for name in points}
    if isinstance(points, str) or not named:
        raise LesionError(f"points must name at least one module (a sequence or a label -> module mapping), got {points!r}")
    modules = [name for name, _ in model.named_modules() if name]
    for label, module in named.items():
        if module not in modules:
            raise LesionError(f"points[{label!r}]: unknown module {module!r}{closest(str(module), modules)}")
        reason = never_runs(model, module)
        if reason:
            raise LesionError(f"points[{label!r}]: {reason}")
    return named


def _slices(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, slice]:
    slices, start = {}, 0
    for name, shape in shapes.items():
        stop = start + math.prod(shape)
        slices[name] = slice(start, stop)
        start = stop
    return slices


@contextmanager
def _recording(model: nn.Module, named: Mapping[str, str], transforms: Mapping[str, Transform]) -> Iterator[dict[str, Tensor]]:
    """Taps that keep each module's latest (transformed) unit output under its label; removed on exit.

    An attention module's heads (B, L, num_heads, head_dim) are kept head-major, (B, num_heads, L, head_dim).
    """
    modules = dict(model.named_modules())
    outputs: dict[str, Tensor] = {}

    def keep(label: str) -> Tap:
        transform = transforms.get(label)
        head_major = isinstance(modules[named[label]], nn.MultiheadAttention)

        def tap(name: str, output: Tensor) -> None:
            output = output.movedim(HEAD_DIM, 1) if head_major else output
            outputs[label] = output if transform is None else transform(output)

        return tap

    with ExitStack() as stack:
        for label, module in named.items():
            stack.enter_context(tapped(model, [module], keep(label)))
        yield outputs


def _write(
    model: nn.Module,
    split: Split,
    named: Mapping[str, str],
    transforms: Mapping[str, Transform],
    target: Path,
    batch_size: int,
    dtype: str,
    progress: bool,
) -> dict[str, tuple[int, ...]]:
    """Stream every batch's outputs into a new memmap at ``target``; return the per-sample shapes."""
    device = model_device(model)
    n = len(split)
    matrix: np.memmap | None = None
    shapes: dict[str, tuple[int, ...]] = {}
    slices: dict[str, slice] = {}
    start = 0
    n_batches = -(-n // batch_size)
    recording = _recording(model, named, transforms)
    bar = progress_bar(n_batches, "capture", enabled=progress)
    with eval_mode(model), torch.inference_mode(), recording as outputs, bar as advance:
        for x, _ in split.batches(batch_size):
            model(x.to(device))
            if matrix is None:
                silent = [label for label in named if label not in outputs]
                if silent:
                    raise LesionError(f"points {silent}: these modules did not run in the model's forward pass")
                shapes = {label: tuple(outputs[label].shape[1:]) for label in named}
                slices = _slices(shapes)
                matrix = open_memmap(target, mode="w+", dtype=dtype, shape=(n, sum(map(math.prod, shapes.values()))))
            stop = start + len(x)
            for label in named:
                matrix[start:stop, slices[label]] = outputs[label].reshape(len(x), -1).float().cpu().numpy()
            start = stop
            advance(1)
    if matrix is None:
        raise LesionError(f"split {split.name!r} is empty: nothing to capture")
    matrix.flush()
    del matrix
    return shapes
