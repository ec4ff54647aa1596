"""`sweep`: evaluate plans of lesions into a run directory, resumably."""

from __future__ import annotations

import datetime as _dt
import hashlib
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lesion._errors import LesionError, closest
from lesion._lesion import INTACT, Lesion, check_lesion, unit_means
from lesion._progress import progress_bar
from lesion.data import Split
from lesion.engine import (
    Outcome,
    check_autocast,
    default_k,
    eval_mode,
    evaluate,
    model_device,
    reference_outcomes,
)
from lesion.metrics import correct_counts
from lesion.models import model_fingerprint
from lesion.plans import Plan
from lesion.store import FORMAT, Run, RunDB
from lesion.store._db import versions

#: Lesions re-evaluated in float32 (besides the intact network) when a sweep runs under autocast.
FLOAT32_CHECK = 16
#: A sweep commits its buffered outcomes at least this often (seconds) ...
COMMIT_SECONDS = 1.0
#: ... or when this many bytes of top-k predictions are buffered.
COMMIT_BYTES = 8 * 2**20
#: Where a sweep evaluates: in this process, or on a Ray cluster.
BACKENDS = ("local", "ray")


def _means_fingerprint(means: Mapping[str, Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(means):
        h.update(name.encode())
        h.update(means[name].detach().cpu().numpy().tobytes())
    return h.hexdigest()


def check_fits(model: nn.Module, split: Split) -> int:
    """Run two samples through ``model``; return its number of outputs, or raise a clear `LesionError`."""
    x, _ = next(split.batches(2))
    try:
        with eval_mode(model), torch.inference_mode():
            logits = model(x.to(model_device(model)))
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise LesionError(
            f"dataset {split.name!r}: inputs of shape {tuple(split.input_shape)} do not fit the model ({first}); "
            "check --data / the model's input size"
        ) from None
    if logits.dim() != 2 or logits.shape[1] != split.n_classes:
        raise LesionError(
            f"dataset {split.name!r} has {split.n_classes} classes but the model returns logits of shape "
            f"{tuple(logits.shape)}; expected (B, {split.n_classes})"
        )
    return int(logits.shape[1])


def sweep(
    model: nn.Module,
    split: Split,
    plans: Plan | Sequence[Plan],
    out: str | Path,
    *,
    model_name: str = "custom",
    k: int | None = None,
    batch_size: int = 256,
    means: Mapping[str, Tensor] | None = None,
    engine: str = "auto",
    memory: int | None = None,
    autocast: str | None = None,
    float32_check: int = FLOAT32_CHECK,
    channels_last: bool = False,
    compile: bool = False,
    config: Mapping[str, Any] | None = None,
    progress: bool = False,
    backend: str = "local",
    address: str | None = None,
) -> Run:
    """Evaluate every lesion of ``plans`` on ``split`` and store the outcomes in the run directory ``out``.

    Running again into the same directory resumes: finished lesions are skipped, none is stored
    twice, and new plans are added. A directory made with another model, dataset or config is refused.

    Parameters
    ----------
    model : nn.Module
        Never modified: parameters and buffers are bit-identical afterwards.
    split : Split
        The evaluation split.
    plans : Plan or sequence of Plan
    out : path
        The run directory (created if missing; must be empty or an earlier run of the same study).
    model_name : str, default="custom"
        Recorded in the run metadata.
    k : int, optional
        Top-k depth; default ``min(5, n_classes)``.
    batch_size : int, default=256
    means : mapping, optional
        Unit means for ``mean`` lesions; default: computed on ``split`` itself.
    engine : {"auto", "fast", "reference"}, default="auto"
    memory : int, optional
        Byte budget for the fast engine.
    autocast : {"bf16", "fp16"}, optional
        Evaluate every lesion (and the intact network) under ``torch.autocast`` in that precision;
        part of the run's identity. The intact network and ``float32_check`` lesions spread evenly
        over the plans are then evaluated again in float32, with the same engine (so the count
        reflects the precision alone), and the number of top-1 predictions that differ is stored
        (:meth:`Run.float32_check`).
    float32_check : int, default=16
        Lesions re-checked in float32 under ``autocast``.
    channels_last, compile : bool, default=False
        Fast-engine options (see :func:`lesion.evaluate`).
    config : mapping, optional
        Extra study configuration; part of the run's identity.
    progress : bool, default=False
        Show a progress bar.
    backend : {"local", "ray"}, default="local"
        ``ray``: evaluate the lesions in shards on a Ray cluster (``pip install 'lesion[ray]'``), one
        actor per CPU slot (or GPU, for a model on CUDA); this process stays the one writer, and the
        stored outcomes are the same as a local run's. Not part of the run's identity: a run may be
        resumed with either backend.
    address : str, optional
        With ``backend="ray"``: the cluster to connect to (``ray start --head`` prints it; ``"auto"``:
        the one on this node). Default: this process's Ray instance, else a new local one.

    Returns
    -------
    Run
    """
    plans = [plans] if isinstance(plans, Plan) else list(plans)
    if backend not in BACKENDS:
        raise LesionError(f"backend must be one of {BACKENDS}, got {backend!r}{closest(backend, BACKENDS)}")
    if address is not None and backend != "ray":
        raise LesionError(f"address is for backend 'ray' only; got address {address!r} with backend {backend!r}")
    if not plans:
        raise LesionError("plans: give at least one plan")
    _check_plans(model, plans)
    n_classes = check_fits(model, split)
    check_autocast(autocast, model_device(model))
    if float32_check < 0:
        raise LesionError(f"float32_check must be >= 0 lesions, got {float32_check}")
    k = default_k(n_classes) if k is None else k
    if not 1 <= k <= n_classes:
        raise LesionError(f"k must be in 1..{n_classes}, got {k}")
    mean_layers = sorted({name for plan in plans for les in plan if les.method == "mean" for name in les.layers})
    means_source = "given" if means is not None else "evaluation split"
    if mean_layers and means is None:
        with eval_mode(model):
            means = unit_means(model, mean_layers, split.batches(batch_size))
    run_config = {"k": k, "means": means_source, **({"autocast": autocast} if autocast else {}), **(config or {})}
    if means is not None and mean_layers:
        run_config["means_sha256"] = _means_fingerprint({n: means[n] for n in mean_layers})
    identity = {
        "model": {"name": model_name, "sha256": model_fingerprint(model)},
        "dataset": {
            "name": split.name,
            "sha256": split.fingerprint(),
            "n": len(split),
            "n_classes": n_classes,
            "class_names": list(split.class_names),
        },
        "config": run_config,
    }
    db = RunDB(out, create=True)
    try:
        _claim(db, identity, split)
        db.register("intact", [INTACT])
        for plan in plans:
            db.register(plan.name, plan.lesions)
            with db.transaction() as con:
                db.set_meta(con, f"plan:{plan.name}", plan.info)
        options = {"engine": engine, "memory": memory, "autocast": autocast, "channels_last": channels_last, "compile": compile}
        _evaluate_pending(db, model, split, plans, k, batch_size, means, options, progress, backend, address)
        if autocast is not None:
            float32 = {**options, "autocast": None}
            _check_float32(db, model, split, _spread(_unique(plans), float32_check), batch_size, means, float32, progress)
    finally:
        db.close()
    return Run(out)


def _claim(db: RunDB, identity: dict[str, Any], split: Split) -> None:
    """Write the run's identity, or check that an existing run has the same one."""
    if db.get_meta("format") is None:
        with db.transaction() as con:
            db.set_meta(con, "format", FORMAT)
            for key, value in identity.items():
                db.set_meta(con, key, value)
            db.set_meta(con, "versions", versions())
            db.set_meta(con, "created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
            db.put_array(con, "labels", split.labels.numpy().astype(np.int64))
        return
    for key, value in identity.items():
        stored = db.get_meta(key)
        if stored != value:
            raise LesionError(
                f"run directory {str(db.dir)!r} was made with a different {key}: stored {_short(stored)}, "
                f"given {_short(value)}. Use a new --out for a different {key}."
            )


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) < 160 else text[:157] + "..."


def _evaluate_pending(
    db: RunDB,
    model: nn.Module,
    split: Split,
    plans: list[Plan],
    k: int,
    batch_size: int,
    means: Mapping[str, Tensor] | None,
    options: dict[str, Any],
    progress: bool,
    backend: str = "local",
    address: str | None = None,
) -> None:
    done = db.done_keys()
    labels = split.labels.numpy()
    n_classes = split.n_classes
    if "intact" not in done:
        (intact,) = reference_outcomes(model, split, [INTACT], k=k, batch_size=batch_size, autocast=options["autocast"])
        db.put_outcomes(["intact"], intact.topk[None], [intact.near_ties], correct_counts(intact.topk[None], labels, n_classes))
    intact_topk = db.topk("intact")
    done.add("intact")
    pending = [lesion for lesion in _unique(plans) if lesion.key not in done]
    if not pending:
        return
    writer = _Writer(db, labels, n_classes, intact_topk)
    with progress_bar(len(pending), "lesions", enabled=progress) as advance:
        if backend == "ray":
            from lesion.engine._ray import ray_outcomes

            outcomes = ray_outcomes(model, split, pending, k=k, batch_size=batch_size, means=means, address=address, **options)
        else:
            outcomes = evaluate(model, split, pending, k=k, batch_size=batch_size, means=means, **options)
        try:
            for outcome in outcomes:
                advance(writer.add(outcome))
        finally:
            advance(writer.flush())


class _Writer:
    """Buffers outcomes and commits them in batches: every :data:`COMMIT_SECONDS` or :data:`COMMIT_BYTES`
    of buffered top-k, whichever comes first (a killed run loses at most that much work)."""

    def __init__(self, db: RunDB, labels: np.ndarray, n_classes: int, intact_topk: np.ndarray) -> None:
        self.db, self.labels, self.n_classes, self.intact_topk = db, labels, n_classes, intact_topk
        self.dtype = np.uint8 if n_classes <= 256 else np.uint16
        self.keys: list[str] = []
        self.tops: list[np.ndarray] = []
        self.ties: list[int] = []
        self.since = time.monotonic()

    def add(self, outcome: Outcome) -> int:
        """Buffer one outcome; returns how many were committed by this call."""
        self.keys.append(outcome.lesion.key)
        self.tops.append(outcome.topk.astype(self.dtype))
        self.ties.append(outcome.near_ties)
        full = len(self.tops) * self.tops[0].nbytes >= COMMIT_BYTES
        return self.flush() if full or time.monotonic() - self.since >= COMMIT_SECONDS else 0

    def flush(self) -> int:
        """Commit the buffer in one transaction; returns its number of outcomes."""
        count = len(self.keys)
        if count:
            tops = np.stack(self.tops)
            self.db.put_outcomes(self.keys, tops, self.ties, correct_counts(tops, self.labels, self.n_classes, self.intact_topk))
        self.keys, self.tops, self.ties, self.since = [], [], [], time.monotonic()
        return count


def _check_plans(model: nn.Module, plans: list[Plan]) -> None:
    """:func:`check_lesion` for every lesion, the model's layers listed once (a plan may hold 10⁶ lesions)."""
    known = {name: layer.n_units for name, layer in check_lesion(model, INTACT).items()}
    for plan in plans:
        for lesion in plan:
            for name, units in lesion.units:
                if name not in known or not 0 <= min(units) <= max(units) < known[name]:
                    check_lesion(model, lesion)  # raises for a bad lesion; accepts a named non-lesionable module


def _unique(plans: list[Plan]) -> list[Lesion]:
    """The plans' lesions in plan order, each once."""
    return list({lesion.key: lesion for plan in plans for lesion in plan}.values())


def _spread(lesions: list[Lesion], count: int) -> list[Lesion]:
    """``count`` lesions evenly spaced over ``lesions`` (all of them when there are fewer)."""
    if count >= len(lesions):
        return lesions
    return [lesions[i] for i in np.unique(np.linspace(0, len(lesions) - 1, count).round().astype(int))]


def _check_float32(
    db: RunDB,
    model: nn.Module,
    split: Split,
    lesions: list[Lesion],
    batch_size: int,
    means: Mapping[str, Tensor] | None,
    options: dict[str, Any],
    progress: bool,
) -> None:
    """Re-evaluate the intact network and ``lesions`` in float32 (same engine options otherwise); store,
    per lesion key, how many top-1 predictions differ from the run's, in meta ``float32_check``."""
    checked: dict[str, int] = db.get_meta("float32_check") or {}
    todo = [lesion for lesion in [INTACT, *lesions] if lesion.key not in checked]
    with progress_bar(len(todo), "float32 check", enabled=progress) as advance:
        for outcome in evaluate(model, split, todo, k=1, batch_size=batch_size, means=means, **options):
            checked[outcome.lesion.key] = int((db.topk(outcome.lesion.key)[:, 0] != outcome.topk[:, 0]).sum())
            with db.transaction() as con:
                db.set_meta(con, "float32_check", checked)
            advance(1)
