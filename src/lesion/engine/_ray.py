"""The Ray backend: a sweep's pending lesions evaluated in shards by Ray actors, one per CPU slot (or GPU).

What travels: the model (a CPU copy, pickled once into Ray's object store), the split and the unit
means (``ray.put`` once; each actor fetches them once when it starts), and per shard only its lesion
keys' :class:`~lesion.Lesion` objects. Back come per shard the (S, N, k) top-k predictions (uint8, or
uint16 past 256 classes) and the near-tie counts; the calling process stays the one writer.

A shard whose actor dies (killed, out of memory, node lost) is evaluated again on a fresh actor, up
to :data:`MAX_RETRIES` times. Each actor runs the same exact engine as a local sweep (:func:`lesion.evaluate`),
so the stored outcomes are the same, outcome for outcome.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lesion._errors import LesionError
from lesion._lesion import Lesion
from lesion.data import Split
from lesion.engine._options import EngineOptions
from lesion.engine._outcome import Outcome

#: How often one shard is evaluated again after its worker died, before the sweep gives up.
MAX_RETRIES = 3
#: Bytes of top-k predictions one shard returns at most (S = this // (N * k), at least 1 lesion).
SHARD_BYTES = 16 * 2**20
#: Shards per worker at least (for balance), when the plan is large enough.
SHARDS_PER_WORKER = 4
#: Shards queued on each actor, so that it never waits for the next.
QUEUED = 2


def ray_outcomes(
    model: nn.Module,
    split: Split,
    lesions: Sequence[Lesion],
    *,
    k: int,
    means: Mapping[str, Tensor] | None,
    options: EngineOptions,
    address: str | None = None,
) -> Iterator[Outcome]:
    """Yield one :class:`Outcome` per lesion (in shard completion order), evaluated on a Ray cluster.

    Parameters
    ----------
    address : str, optional
        A running cluster's address (``ray start --head`` prints it; ``"auto"``: the one on this node).
        Default: the Ray instance this process already started (``ray.init``), else a new local one.
    options : EngineOptions
        The engine settings each worker evaluates its shards with (:func:`lesion.evaluate`).
    """
    ray = _import_ray()
    lesions = list(lesions)
    if not lesions:
        return
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    elif address is not None:
        warnings.warn(f"address {address!r} ignored: this process is already connected to a Ray cluster", stacklevel=2)
    try:
        yield from _run(ray, model, split, lesions, k, means, options)
    finally:
        if started:
            ray.shutdown()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise LesionError("backend 'ray' needs Ray: pip install 'lesion[ray]' (or pip install 'ray>=2.9')") from None
    return ray


def _run(
    ray: Any,
    model: nn.Module,
    split: Split,
    lesions: list[Lesion],
    k: int,
    means: Mapping[str, Tensor] | None,
    options: EngineOptions,
) -> Iterator[Outcome]:
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    slot = "GPU" if device.type == "cuda" else "CPU"
    available = int(ray.cluster_resources().get(slot, 0))
    if available < 1:
        raise LesionError(f"backend 'ray': the cluster has no {slot} for the model on {device}; start one with {slot.lower()}s")
    per_shard = max(1, SHARD_BYTES // max(1, len(split) * k))
    size = max(1, min(per_shard, math.ceil(len(lesions) / (available * SHARDS_PER_WORKER))))
    shards = [lesions[i : i + size] for i in range(0, len(lesions), size)]
    workers = min(available, len(shards))
    cpu_model = copy.deepcopy(model).cpu() if device.type != "cpu" else model
    cpu_means = None if means is None else {name: value.detach().cpu() for name, value in means.items()}
    refs = (ray.put(cpu_model), ray.put(split), ray.put(cpu_means))
    actor_class = ray.remote(**({"num_gpus": 1} if slot == "GPU" else {"num_cpus": 1}))(ShardWorker)

    def start() -> Any:
        return actor_class.remote(*refs, device.type, k, options)

    actors = [start() for _ in range(workers)]
    generation = [0] * workers
    todo = deque(range(len(shards)))
    tries = [0] * len(shards)
    in_flight: dict[Any, tuple[int, int, int]] = {}  # result ref -> (worker, its generation, shard)

    def submit(worker: int) -> None:
        while todo and sum(1 for w, _, _ in in_flight.values() if w == worker) < QUEUED:
            shard = todo.popleft()
            in_flight[actors[worker].evaluate.remote(shards[shard])] = (worker, generation[worker], shard)

    try:
        for worker in range(workers):
            submit(worker)
        while in_flight:
            (ready,), _ = ray.wait(list(in_flight), num_returns=1)
            worker, gen, shard = in_flight.pop(ready)
            try:
                tops, ties = ray.get(ready)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.ObjectLostError) as error:
                tries[shard] += 1
                if tries[shard] > MAX_RETRIES:
                    raise LesionError(
                        f"backend 'ray': shard {shard} ({len(shards[shard])} lesions from {shards[shard][0].key!r}) lost its "
                        f"worker {tries[shard]} times ({type(error).__name__}); giving up. Finished lesions are stored: rerun to resume."
                    ) from None
                warnings.warn(
                    f"backend 'ray': shard {shard} lost its worker ({type(error).__name__}); evaluating it again "
                    f"(retry {tries[shard]} of {MAX_RETRIES})",
                    stacklevel=2,
                )
                if gen == generation[worker]:  # the first failure seen from this actor: replace it
                    ray.kill(actors[worker], no_restart=True)
                    actors[worker], generation[worker] = start(), generation[worker] + 1
                todo.appendleft(shard)
                submit(worker)
                continue
            for lesion, top, tie in zip(shards[shard], tops, ties, strict=True):
                yield Outcome(lesion, top.astype(np.int64), int(tie))
            submit(worker)
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)


class ShardWorker:
    """A Ray actor: holds the model, the split and the means, evaluates shards of lesions with :func:`lesion.evaluate`."""

    def __init__(
        self,
        model: nn.Module,
        split: Split,
        means: Mapping[str, Tensor] | None,
        device: str,
        k: int,
        options: EngineOptions,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.means = None if means is None else {name: value.to(self.device) for name, value in means.items()}
        self.split, self.k, self.options = split, k, options
        self.dtype = np.uint8 if split.n_classes <= 256 else np.uint16

    def evaluate(self, lesions: list[Lesion]) -> tuple[np.ndarray, np.ndarray]:
        """(S, N, k) top-k predictions and (S,) near-tie counts of ``lesions``, in their order."""
        from lesion.engine import evaluate

        found = {
            outcome.lesion.key: outcome
            for outcome in evaluate(self.model, self.split, lesions, k=self.k, means=self.means, options=self.options)
        }
        tops = np.stack([found[lesion.key].topk.astype(self.dtype) for lesion in lesions])
        return tops, np.array([found[lesion.key].near_ties for lesion in lesions], dtype=np.int64)
