"""`sweep`: evaluate plans of lesions into a run directory, resumably."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lesion._errors import LesionError, check_int, closest
from lesion._lesion import INTACT, Lesion, check_lesions, unit_means
from lesion._progress import progress_bar
from lesion.data import Split
from lesion.engine import (
    EngineOptions,
    Outcome,
    check_autocast,
    check_model_device,
    default_k,
    eval_mode,
    evaluate,
    model_device,
    reference_outcomes,
)
from lesion.engine._options import FLOAT32_CHECK, engine_options
from lesion.metrics import correct_counts
from lesion.models import model_fingerprint
from lesion.plans import Plan
from lesion.store import FORMAT, Run, RunDB
from lesion.store._db import check_run_dir, versions
from lesion.store._lock import DirLock

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
    options: EngineOptions | None = None,
    config: Mapping[str, Any] | None = None,
    extend: bool = False,
    progress: bool = False,
    backend: str = "local",
    address: str | None = None,
) -> Run:
    """Evaluate every lesion of ``plans`` on ``split`` and store the outcomes in the run directory ``out``.

    Running again into the same directory resumes: finished lesions are skipped and none is stored
    twice. A directory made with another model (by content: the weights' sha256), dataset, config
    or plans is refused with the differing field named; ``extend=True`` adds new plans, or new
    lesions of a stored plan, to the run instead. Everything is validated before the directory is
    touched; one process at a time writes a run (a lock file holds its pid, host and start time).

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
        Recorded in the run metadata (not part of its identity: the weights' sha256 is).
    k : int, optional
        Top-k depth; default ``min(5, n_classes)``.
    batch_size, engine, memory, autocast, float32_check, channels_last, compile
        The engine settings, as keywords (see :class:`lesion.engine.EngineOptions`). Under ``autocast``
        the intact network and ``float32_check`` lesions spread evenly over the plans are
        evaluated again in float32 with the same engine, and the number of top-1 predictions that
        differ is stored (:meth:`Run.float32_check`); the precision is part of the run's identity.
    options : EngineOptions, optional
        The same settings as one validated object (instead of the keywords).
    means : mapping, optional
        Unit means for ``mean`` lesions; default: computed on ``split`` itself.
    config : mapping, optional
        Extra study configuration; part of the run's identity.
    extend : bool, default=False
        Allow plans (or lesions of a plan) that the existing run does not hold yet.
    progress : bool, default=False
        Show progress (a bar on a terminal, a line about every 10 s otherwise).
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
    opts = engine_options(
        options, engine=engine, batch_size=batch_size, memory=memory, autocast=autocast,
        float32_check=float32_check, channels_last=channels_last, compile=compile,
    )
    plans = [plans] if isinstance(plans, Plan) else list(plans)
    if backend not in BACKENDS:
        raise LesionError(f"backend must be one of {BACKENDS}, got {backend!r}{closest(backend, BACKENDS)}")
    if address is not None and backend != "ray":
        raise LesionError(f"address is for backend 'ray' only; got address {address!r} with backend {backend!r}")
    if not plans or not all(isinstance(plan, Plan) for plan in plans):
        raise LesionError("plans: give at least one Plan (from lesion.single, lesion.pairs, lesion.fraction)")
    check_lesions(model, (lesion for plan in plans for lesion in plan))
    check_model_device(model, opts)
    n_classes = check_fits(model, split)
    check_autocast(opts.autocast, model_device(model))
    k = default_k(n_classes) if k is None else check_int("k", k, 1, n_classes, why=" (the number of classes at most)")
    check_run_dir(out)
    mean_layers = sorted({name for plan in plans for les in plan if les.method == "mean" for name in les.layers})
    means_source = "given" if means is not None else "evaluation split"
    if mean_layers and means is None:
        with eval_mode(model):
            means = unit_means(model, mean_layers, split.batches(opts.batch_size))
    run_config = {"k": k, "means": means_source, **({"autocast": opts.autocast} if opts.autocast else {}), **(config or {})}
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
    with DirLock(out):
        db = RunDB(out, create=True)
        try:
            _claim(db, identity, split, plans, extend)
            db.register("intact", [INTACT])
            for plan in plans:
                db.register(plan.name, plan.lesions)
            _evaluate_pending(db, model, split, plans, k, means, opts, progress, backend, address)
            if opts.autocast is not None:
                float32 = replace(opts, autocast=None)
                _check_float32(db, model, split, _spread(_unique(plans), opts.float32_check), means, float32, progress)
        finally:
            db.close()
    return Run(out)


def _claim(db: RunDB, identity: dict[str, Any], split: Split, plans: list[Plan], extend: bool) -> None:
    """Write the run's identity and plans, or check that an existing run has the same ones."""
    if db.get_meta("format") is None:
        with db.transaction() as con:
            db.set_meta(con, "format", FORMAT)
            for key, value in identity.items():
                db.set_meta(con, key, value)
            db.set_meta(con, "versions", versions())
            db.set_meta(con, "created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
            db.put_array(con, "labels", split.labels.numpy().astype(np.int64))
            for plan in plans:
                db.set_meta(con, f"plan:{plan.name}", plan.info)
        return
    where = f"run directory {str(db.dir)!r}"
    _check_same(db, identity, "model", where)
    _check_same(db, identity, "dataset", where)
    changes: dict[str, Any] = {}
    for plan in plans:
        stored = db.get_meta(f"plan:{plan.name}")
        info = plain(plan.info)
        known = [stored] if stored is None else [{k: v for k, v in stored.items() if k != "extensions"}, *stored.get("extensions", [])]
        if info in known:
            continue
        if not extend:
            if stored is None:
                raise LesionError(
                    f"--extend: {where} holds no plan {plan.name!r} (it holds {_plan_names(db)}); "
                    "give --extend (extend=True) to add it to the run, or use a new --out"
                )
            differences = describe_differences(info, known[0], "")
            raise LesionError(
                f"--extend: {where} holds plan {plan.name!r} with another selection: {'; '.join(differences)}. "
                "Rerun with the run's selection to resume, give --extend (extend=True) to add these lesions "
                "to the run, or use a new --out"
            )
        changes[plan.name] = info if stored is None else {**stored, "extensions": [*stored.get("extensions", []), info]}
    _check_same(db, identity, "config", where)
    if changes:
        with db.transaction() as con:
            for name, info in changes.items():
                db.set_meta(con, f"plan:{name}", info)


def _check_same(db: RunDB, identity: dict[str, Any], key: str, where: str) -> None:
    stored, given = db.get_meta(key), plain(identity[key])
    if key == "model":  # the name is a label; the weights' content is the identity
        stored, given = {"sha256": (stored or {}).get("sha256")}, {"sha256": given["sha256"]}
    differences = describe_differences(given, stored, key)
    if differences:
        raise LesionError(
            f"--out: {where} was made with a different {key}: {'; '.join(differences)}. "
            "Rerun with the run's settings to resume, or use a new --out"
        )


def _plan_names(db: RunDB) -> list[str]:
    return sorted(r[0].removeprefix("plan:") for r in db.con.execute("SELECT key FROM meta WHERE key LIKE 'plan:%'"))


def plain(value: Any) -> Any:
    """``value`` as its stored JSON gives it back (tuples become lists)."""
    return json.loads(json.dumps(value, sort_keys=True))


def describe_differences(here: Any, there: Any, path: str) -> list[str]:
    """Each field where ``here`` differs from ``there`` (the stored run), in words.

    >>> describe_differences({"method": "mean", "k": 5}, {"method": "zero", "k": 5}, "")
    ["method: 'mean' here, 'zero' in the run"]
    """
    if isinstance(here, dict) and isinstance(there, dict):
        out: list[str] = []
        for key in sorted(set(here) | set(there)):
            name = f"{path}.{key}" if path else str(key)
            if key not in there:
                out.append(f"{name}: {_short(here[key])} here, absent in the run")
            elif key not in here:
                out.append(f"{name}: absent here, {_short(there[key])} in the run")
            else:
                out.extend(describe_differences(here[key], there[key], name))
        return out
    return [] if here == there else [f"{path or 'value'}: {_short(here)} here, {_short(there)} in the run"]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 80 else text[:77] + "..."


def _evaluate_pending(
    db: RunDB,
    model: nn.Module,
    split: Split,
    plans: list[Plan],
    k: int,
    means: Mapping[str, Tensor] | None,
    options: EngineOptions,
    progress: bool,
    backend: str = "local",
    address: str | None = None,
) -> None:
    done = db.done_keys()
    labels = split.labels.numpy()
    n_classes = split.n_classes
    if "intact" not in done:
        (intact,) = reference_outcomes(model, split, [INTACT], k=k, batch_size=options.batch_size, autocast=options.autocast)
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

            outcomes = ray_outcomes(model, split, pending, k=k, means=means, options=options, address=address)
        else:
            outcomes = evaluate(model, split, pending, k=k, means=means, options=options, on_batch=advance.tick)
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
    means: Mapping[str, Tensor] | None,
    options: EngineOptions,
    progress: bool,
) -> None:
    """Re-evaluate the intact network and ``lesions`` in float32 (same engine options otherwise); store,
    per lesion key, how many top-1 predictions differ from the run's, in meta ``float32_check``."""
    checked: dict[str, int] = db.get_meta("float32_check") or {}
    todo = [lesion for lesion in [INTACT, *lesions] if lesion.key not in checked]
    with progress_bar(len(todo), "float32 check", enabled=progress) as advance:
        for outcome in evaluate(model, split, todo, k=1, means=means, options=options):
            checked[outcome.lesion.key] = int((db.topk(outcome.lesion.key)[:, 0] != outcome.topk[:, 0]).sum())
            with db.transaction() as con:
                db.set_meta(con, "float32_check", checked)
            advance(1)
