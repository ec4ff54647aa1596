"""`Split` and `Dataset`: the data every stage of `lesion` reads."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset
from torch.utils.data import Dataset as TorchDataset

from lesion._errors import LesionError


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a dataset.

    Parameters
    ----------
    name : str
        e.g. ``"mnist/test"``.
    inputs : Tensor of shape (N, *input_shape), or a torch Dataset of ``(x, y)`` pairs
        In-memory float32 inputs (already normalised), or a lazily decoded dataset
        (image folders) read through a DataLoader.
    labels : Tensor of shape (N,), int64
    class_names : tuple of str
    fingerprint_source : str, optional
        What identifies a lazily decoded split (e.g. its file list); in-memory splits hash their bytes.
    """

    name: str
    inputs: Tensor | TorchDataset
    labels: Tensor
    class_names: tuple[str, ...]
    fingerprint_source: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.inputs, Tensor) and len(self.inputs) != len(self.labels):
            raise LesionError(
                f"Split {self.name!r}: inputs has {len(self.inputs)} rows but labels has {len(self.labels)}"
            )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        if isinstance(self.inputs, Tensor):
            return tuple(self.inputs.shape[1:])
        return tuple(self.inputs[0][0].shape)

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        workers: int = 0,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield ``(x, y)`` batches, x of shape (B, *input_shape), y of shape (B,)."""
        if batch_size < 1:
            raise LesionError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(self.inputs, Tensor):
            n = len(self)
            order = torch.randperm(n, generator=generator) if shuffle else None
            for start in range(0, n, batch_size):
                if order is None:
                    yield self.inputs[start : start + batch_size], self.labels[start : start + batch_size]
                else:
                    idx = order[start : start + batch_size]
                    yield self.inputs[idx], self.labels[idx]
        else:
            loader = DataLoader(
                self.inputs, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=workers
            )
            for x, y in loader:
                yield x, y.long()

    def subset(self, indices: Sequence[int] | Tensor | np.ndarray, name: str | None = None) -> Split:
        """The split restricted to ``indices`` (in that order)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        inputs = self.inputs[idx] if isinstance(self.inputs, Tensor) else Subset(self.inputs, idx.tolist())
        source = None
        if self.fingerprint_source is not None:
            source = self.fingerprint_source + ":" + hashlib.sha256(idx.numpy().tobytes()).hexdigest()
        return Split(name or f"{self.name}[{len(idx)}]", inputs, self.labels[idx], self.class_names, source)

    def head(self, n: int | None) -> Split:
        """The first ``n`` samples, stratification-free (None: the whole split)."""
        return self if n is None or n >= len(self) else self.subset(torch.arange(n), f"{self.name}[:{n}]")

    def fingerprint(self) -> str:
        """sha256 of the inputs' bytes (or the fingerprint source) and the labels."""
        h = hashlib.sha256()
        if isinstance(self.inputs, Tensor):
            h.update(np.ascontiguousarray(self.inputs.detach().cpu().numpy()).tobytes())
        else:
            h.update((self.fingerprint_source or self.name).encode())
        h.update(self.labels.cpu().numpy().astype(np.int64).tobytes())
        h.update("\0".join(self.class_names).encode())
        return h.hexdigest()


@dataclass(frozen=True, eq=False)
class Dataset:
    """A named dataset: the evaluation split ``test`` and, where one exists, a ``train`` split."""

    name: str
    test: Split
    train: Split | None = None

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.test.class_names
