"""The VGG study of Meyes et al. (2019), "Ablation studies in artificial neural networks", §3.2-3.3, §4.3-4.4.

``run_meyes2019_vgg(out, ...)`` lesions groups of similar filters in every conv layer of a VGG
with batch norm, resolves the accuracy drops by depth, and retrains the network with lesions in
its two most important layers:

1. **Depth-resolved lesions** (Figures 14-17). For every conv layer and fraction (1, 5, 10, 25,
   50 %), every filter is once the reference of a group of that fraction of the layer's filters,
   the reference and its nearest filters by Euclidean distance of the L2-normalised filter
   weights (``lesion.plans.fraction(..., "similar")``). Per layer: the mean top-1 / top-5 drop
   over the references with the lower and upper standard deviations (the root-mean-square
   deviation of the drops below / above the mean, see :mod:`lesion.studies.meyes2019_vgg._analysis`),
   overall and per class. Layers are named by module path (``features.N``), so on VGG-19-BN they
   carry the paper's numbers (``features.33``, ``features.46``).
2. **Lesion point** (batch norm, stated plainly). The paper sets a filter's weights and bias to
   0; with batch norm after the conv, the filter's block then outputs ``ReLU(β - γ·μ/√(σ²+ε))``
   (BN's shift of a zero input), a constant that is not 0. ``lesion_point="conv"`` (default)
   lesions the conv output ``features.N``, the paper's literal method; ``"block"`` lesions the
   ReLU after BN, the block's output, which silences the filter. The other point is measured at
   ``compare_fraction`` (10 %) for the comparison in the summary.
3. **Recovery** (Figures 18, 19) in the two layers with the largest mean top-1 drop at 10 %,
   always lesioning the conv output (the paper's method) with :func:`run_recovery`: several
   instances of 25 % groups retrained for a few epochs, and iterative 25 % lesions with
   replacement, each retrained until the top-5 accuracy plateaus.

Two sources: ``small=True`` trains a small-input VGG with batch norm (``vgg11_bn``, 28 px,
``width_divisor`` 4 by default) on Fashion-MNIST or MNIST and saves it as ``out/model.pt``;
``small=False`` loads a torchvision-format ``vgg19_bn`` state dict (``weights``) and ImageNet
folders (``val_dir``; ``train_dir`` for recovery). The evaluation split is a seeded random subset
of ``eval_samples`` images of the test / validation split.

The run directory holds ``study.json``, ``model.pt`` (small), ``lesions/`` (the resumable sweep),
``recovery/<layer>/<protocol>/``, ``tables/*.csv``, ``figures/*.{png,svg}``, ``timings.json``
and ``summary.md``. Rerunning into it resumes every stage.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from lesion._errors import LesionError, check_int, closest
from lesion._files import file_sha256
from lesion._lesion import Lesion
from lesion._threads import torch_threads
from lesion.data import Dataset, Split, load_dataset
from lesion.models import load_model
from lesion.models._vgg import vgg_conv_layers
from lesion.plans import Plan
from lesion.plans._fraction import fraction
from lesion.store import Run
from lesion.studies._engine import EngineConfig
from lesion.studies._study import StudyDir, StudyResult
from lesion.studies.meyes2019_vgg import _analysis as analysis
from lesion.studies.meyes2019_vgg._analysis import RECOVERY_FRACTION
from lesion.studies.meyes2019_vgg._report import draw_figures, write_summary
from lesion.train import RecoveryResult, run_recovery, seeded_subset

STUDY = "meyes2019-vgg"
FRACTIONS = (0.01, 0.05, 0.10, 0.25, 0.50)
LESION_POINTS = ("conv", "block")
SMALL_DATA = ("fashion-mnist", "mnist")
#: The small network: vgg11_bn for 28 px greyscale inputs; the classifier's hidden width.
SMALL_MODEL = "vgg11_bn"
SMALL_CLASSIFIER_WIDTH = 128
#: SGD of the small network's training (ours; the paper used torchvision's pretrained VGG-19-BN).
TRAIN_SGD: dict[str, Any] = {"lr": 0.01, "momentum": 0.9, "batch_size": 64}


@dataclass(frozen=True, kw_only=True)
class Meyes2019VggResult(StudyResult):
    """Everything the study computed (besides `StudyResult`'s files and timings).

    Attributes
    ----------
    config : dict
        The study's settings (``out/study.json``).
    run : Run
        The lesion run (``out/lesions``), plans ``similar-conv`` and / or ``similar-block``.
    accuracy : dict of str -> float
        The intact network's ``top1`` and ``top5`` on the evaluation split (fractions).
    depth : DataFrame
        :func:`lesion.studies.meyes2019_vgg._analysis.layer_drops`: one row per (point, metric,
        fraction, layer, class) with ``mean``, ``lower_std``, ``upper_std`` (pp).
    ranking : DataFrame
        The layers by mean top-1 drop at the reference fraction (10 %), largest first.
    points : DataFrame
        Per layer, mean top-1 drop under each lesion point at ``compare_fraction``.
    classes : list of str
        The example classes of Figure 16.
    recovery : list of RecoveryResult
        One per recovered layer and protocol.
    """

    config: dict[str, Any]
    run: Run
    accuracy: dict[str, float]
    depth: pd.DataFrame
    ranking: pd.DataFrame
    points: pd.DataFrame
    classes: list[str]
    recovery: list[RecoveryResult]

    @property
    def recovery_layers(self) -> list[str]:
        """The recovered layers, in order of importance."""
        return list(dict.fromkeys(r.layer for r in self.recovery))


def run_meyes2019_vgg(
    out: str | Path,
    *,
    small: bool = True,
    data: str = "fashion-mnist",
    data_dir: str | Path | None = None,
    weights: str | Path | None = None,
    train_dir: str | Path | None = None,
    val_dir: str | Path | None = None,
    model: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    fractions: Sequence[float] = FRACTIONS,
    eval_samples: int | None = 1000,
    lesion_point: str = "conv",
    compare_fraction: float | None = 0.10,
    classes: Sequence[str] | None = None,
    epochs: int = 5,
    width_divisor: int = 4,
    train_samples: int | None = None,
    recovery: bool = True,
    recovery_layers: Sequence[str] | None = None,
    recovery_samples: int | None = 5000,
    instances: int = 5,
    recovery_epochs: int = 5,
    max_epochs: int = 20,
    max_iterations: int = 6,
    seed: int = 0,
    threads: int | None = None,
    engine: EngineConfig | None = None,
    progress: bool = False,
) -> Meyes2019VggResult:
    """Reproduce the VGG study of Meyes et al. (2019); see the module docstring for the stages.

    Parameters
    ----------
    out : path
        The study directory (created; rerun into it to resume).
    small : bool, default=True
        Train a small-input VGG on ``data`` (True) or load ``weights`` and ImageNet folders (False).
    data : {"fashion-mnist", "mnist"}, default="fashion-mnist"
        For ``small``.
    data_dir : path, optional
        Where the IDX files are (default ``$LESION_DATA_DIR``), for ``small``.
    weights : path, optional
        For ``small=False``: a torchvision-format state dict of ``model`` (or a lesion checkpoint).
    train_dir, val_dir : path, optional
        For ``small=False``: ImageNet-style folders (one sub-folder per class); ``val_dir`` is
        evaluated, ``train_dir`` fixes the class order and is needed for recovery.
    model : str, optional
        Default ``vgg11_bn`` (small) or ``vgg19_bn``.
    model_kwargs : dict, optional
        Factory arguments for ``small=False`` (default: torchvision's).
    fractions : sequence of float, default=(0.01, 0.05, 0.10, 0.25, 0.50)
    eval_samples : int or None, default=1000
        A seeded random subset of the evaluation split (None: all of it).
    lesion_point : {"conv", "block"}, default="conv"
        Lesion the conv output (the paper's literal method) or the block output after BN + ReLU.
    compare_fraction : float or None, default=0.10
        The fraction at which the other lesion point is also measured (None: not measured).
    classes : sequence of str, optional
        The example classes of Figure 16 (default: five spread over the class list).
    epochs : int, default=5
        Training epochs of the small network (SGD lr 0.01, momentum 0.9, batch 64).
    width_divisor : int, default=4
        Conv widths of the small network are torchvision's divided by this.
    train_samples : int, optional
        Train the small network on the first ``train_samples`` training images only.
    recovery : bool, default=True
        Run both recovery protocols (needs a train split).
    recovery_layers : sequence of str, optional
        Default: the two layers with the largest mean top-1 drop at the reference fraction.
    recovery_samples : int or None, default=5000
        A seeded random subset of the train split used for recovery training (None: all).
    instances : int, default=5
        Instances of the first protocol.
    recovery_epochs : int, default=5
        Epochs per instance, and the minimum epochs per iteration of the iterative protocol.
    max_epochs : int, default=20
        Epochs per iteration at most.
    max_iterations : int, default=6
        Iterations of the iterative protocol.
    seed : int, default=0
        Seeds training, the evaluation and recovery subsets and the recovery draws.
    threads : int, optional
        torch threads for the whole study (default: torch's).
    engine : EngineConfig, optional
        How the sweep runs (device, precision, memory, batch size); default `EngineConfig()`.
    progress : bool, default=False

    Returns
    -------
    Meyes2019VggResult
    """
    config = _config(
        small=small, data=data, weights=weights, train_dir=train_dir, val_dir=val_dir, model=model,
        model_kwargs=model_kwargs, fractions=fractions, eval_samples=eval_samples, lesion_point=lesion_point,
        compare_fraction=compare_fraction, epochs=epochs, width_divisor=width_divisor, train_samples=train_samples,
        recovery=recovery, recovery_samples=recovery_samples, instances=instances, recovery_epochs=recovery_epochs,
        max_epochs=max_epochs, max_iterations=max_iterations, seed=seed,
    )
    with torch_threads(threads) if threads else contextlib.nullcontext():
        net, dataset = _inputs(config, data_dir, weights, train_dir, val_dir)
        classes = _example_classes(classes, dataset.test.class_names)
        study = StudyDir(out, STUDY, config).claim()
        return _run(study, net, dataset, classes, recovery_layers, engine or EngineConfig(), progress)


def _run(
    study: StudyDir, net: nn.Module | None, dataset: Dataset, classes: list[str],
    recovery_layers: Sequence[str] | None, engine: EngineConfig, progress: bool,
) -> Meyes2019VggResult:
    config = study.identity
    if net is None:
        study.cached("train", "model.pt", lambda: _train(dataset, config, progress))
        net = load_model(checkpoint=study.path("model.pt"))
    split = seeded_subset(dataset.test, config["eval_samples"], config["seed"])
    with study.stage("sweep", resumable=True):
        run, plans = _sweep(net, split, config, study.path("lesions"), engine, progress)
    convs = vgg_conv_layers(net)
    depth = analysis.layer_drops(run, plans, point_layers={"block": convs})
    point, p_ref = config["lesion_point"], analysis.reference_fraction(config["fractions"])
    ranking = analysis.ranked_layers(depth, point, p_ref)
    points = analysis.point_comparison(depth, config["compare_fraction"] or p_ref)
    chosen = _recovery_layers(recovery_layers, ranking, convs)
    results = []
    if config["recovery"]:
        with study.stage("recovery", resumable=True):
            results = _recover(net, dataset, split, chosen, config, study.path("recovery"), progress)
    intact = run.table("top1").loc["intact", "all"], run.table("topk").loc["intact", "all"]
    result = Meyes2019VggResult(
        out=study.out, config=config, run=run, accuracy={"top1": float(intact[0]), "top5": float(intact[1])},
        depth=depth, ranking=ranking, points=points, classes=classes,
        recovery=results,
    )
    _write_tables(study, result)
    with study.stage("figures"):
        draw_figures(study, result)
    write_summary(study, result)
    return replace(result, **study.files())


# --- configuration and resumption ---------------------------------------------------------


def _config(**settings: Any) -> dict[str, Any]:
    """The checked settings: what makes a study directory what it is."""
    s = settings
    if s["lesion_point"] not in LESION_POINTS:
        raise LesionError(f"lesion_point must be one of {LESION_POINTS}, got {s['lesion_point']!r}{closest(str(s['lesion_point']), LESION_POINTS)}")
    fractions = [float(p) for p in s["fractions"]]
    compare = s["compare_fraction"]
    if not fractions or any(not 0 < p <= 1 for p in [*fractions, *([compare] if compare is not None else [])]):
        raise LesionError(f"fractions and compare_fraction must be proportions in (0, 1] (0.1 for 10 %), got {fractions}, {compare}")
    for name in ("epochs", "width_divisor", "instances", "recovery_epochs", "max_epochs", "max_iterations"):
        check_int(name, s[name], 1)
    check_int("seed", s["seed"], 0)
    for name in ("eval_samples", "train_samples", "recovery_samples"):
        if s[name] is not None:
            check_int(name, s[name], 10)
    if s["small"]:
        if s["data"] not in SMALL_DATA:
            raise LesionError(f"data must be one of {SMALL_DATA} for the small VGG, got {s['data']!r}{closest(str(s['data']), SMALL_DATA)}")
        model = s["model"] or SMALL_MODEL
        source = {"data": s["data"], "epochs": s["epochs"], "width_divisor": s["width_divisor"], "train_samples": s["train_samples"]}
    else:
        if s["weights"] is None or s["val_dir"] is None:
            raise LesionError(
                "without --small (small=False) the study needs --weights FILE (weights=) and --val-dir DIR (val_dir=), "
                f"got weights={s['weights']!r}, val_dir={s['val_dir']!r}; or pass --small"
            )
        if s["recovery"] and s["train_dir"] is None:
            raise LesionError("recovery needs the training images: give train_dir (--train-dir DIR) or recovery=False (--no-recovery)")
        model = s["model"] or "vgg19_bn"
        source = {
            "data": "folder", "weights_sha256": file_sha256(Path(s["weights"]), "weights"), "model_kwargs": dict(s["model_kwargs"] or {}),
            "val_dir": str(Path(s["val_dir"]).resolve()),
            "train_dir": None if s["train_dir"] is None else str(Path(s["train_dir"]).resolve()),
        }
    return {
        "study": STUDY, "small": bool(s["small"]), "model": model, **source, "fractions": fractions,
        "eval_samples": s["eval_samples"], "lesion_point": s["lesion_point"], "compare_fraction": compare,
        "seed": s["seed"], "recovery": bool(s["recovery"]), "recovery_samples": s["recovery_samples"],
        "instances": s["instances"], "recovery_epochs": s["recovery_epochs"], "max_epochs": s["max_epochs"],
        "max_iterations": s["max_iterations"],
    }


def _inputs(
    config: dict[str, Any], data_dir: str | Path | None, weights: str | Path | None, train_dir: str | Path | None,
    val_dir: str | Path | None,
) -> tuple[nn.Module | None, Dataset]:
    """The given network in eval mode (None for the small one, trained in the study) and the dataset."""
    if not config["small"]:
        dataset = load_dataset("folder", train_dir=train_dir, val_dir=val_dir)
        return load_model(config["model"], weights, **config["model_kwargs"]), dataset
    dataset = load_dataset(config["data"], data_dir, require_train=True)
    if config["train_samples"] is not None and dataset.train is not None:
        dataset = Dataset(dataset.name, dataset.test, dataset.train.head(config["train_samples"]))
    return None, dataset


def small_model_kwargs(n_classes: int, width_divisor: int) -> dict[str, Any]:
    """Factory arguments of the small VGG: 28 px greyscale inputs, narrower convs and classifier."""
    return {
        "n_classes": n_classes, "in_channels": 1, "image_size": 28, "width_divisor": width_divisor,
        "classifier_width": SMALL_CLASSIFIER_WIDTH,
    }


def _train(dataset: Dataset, config: dict[str, Any], progress: bool) -> dict[str, Any]:
    from lesion.train import train_model

    return train_model(
        config["model"], dataset, seed=config["seed"], epochs=config["epochs"], **TRAIN_SGD,
        model_kwargs=small_model_kwargs(len(dataset.class_names), config["width_divisor"]), progress=progress,
    )


def block_output(model: nn.Module, conv: str) -> str:
    """The module whose output is the block of ``conv``: the first ReLU after it (after its BN).

    >>> from lesion.models import build_model
    >>> block_output(build_model("vgg19_bn", width_divisor=64, classifier_width=8), "features.33")
    'features.35'
    """
    names = [name for name, _ in model.named_modules()]
    modules = dict(model.named_modules())
    if conv not in modules or not isinstance(modules[conv], nn.Conv2d):
        raise LesionError(f"conv must name a Conv2d of the model, got {conv!r}{closest(str(conv), vgg_conv_layers(model))}")
    after = names[names.index(conv) + 1 :]
    found = next((name for name in after if isinstance(modules[name], nn.ReLU)), None)
    if found is None:
        raise LesionError(f"no ReLU follows conv {conv!r}: the block output cannot be lesioned")
    return found


def point_plan(model: nn.Module, layers: Sequence[str], fractions: Sequence[float], point: str) -> Plan:
    """Similar-filter groups of every conv in ``layers``, lesioned at the conv (``conv``) or block output (``block``).

    The groups are those of ``fraction(model, layers, fractions, "similar")`` (chosen by the
    conv filters' weights) in both cases; for ``block`` each lesion's layer ``features.N`` is
    replaced by its :func:`block_output`, and so are the names in ``info``.
    """
    plan = fraction(model, list(layers), list(fractions), "similar", name=f"similar-{point}")
    if point == "conv":
        return plan
    target = {conv: block_output(model, conv) for conv in plan.info["layers"]}

    def moved(lesion: Lesion) -> Lesion:
        return Lesion(tuple((target[name], units) for name, units in lesion.units), lesion.method)

    lesions = {lesion.key: moved(lesion) for lesion in plan}
    info = {
        **plan.info,
        "layers": [target[name] for name in plan.info["layers"]],
        "sizes": {target[name]: sizes for name, sizes in plan.info["sizes"].items()},
        "members": {lesions[key].key: [[target[layer], p, i] for layer, p, i in rows] for key, rows in plan.info["members"].items()},
        "lesion_point": "block output (the ReLU after the conv's batch norm)",
    }
    return Plan(plan.name, tuple(lesions.values()), info)


def _sweep(
    model: nn.Module, split: Split, config: dict[str, Any], path: Path, engine: EngineConfig, progress: bool
) -> tuple[Run, dict[str, str]]:
    """Similar-filter groups of every conv layer: all fractions at the main point, the compare fraction at the other."""
    convs = vgg_conv_layers(model)
    main = config["lesion_point"]
    plans = [point_plan(model, convs, config["fractions"], main)]
    if config["compare_fraction"] is not None:
        other = next(p for p in LESION_POINTS if p != main)
        plans.append(point_plan(model, convs, [config["compare_fraction"]], other))
    study = {key: config[key] for key in ("study", "fractions", "lesion_point", "compare_fraction", "eval_samples", "seed")}
    run = engine.sweep(model, split, plans, path, model_name=config["model"], config=study, progress=progress)
    return run, {plan.name.removeprefix("similar-"): plan.name for plan in plans}


def _recovery_layers(given: Sequence[str] | None, ranking: pd.DataFrame, convs: Sequence[str]) -> list[str]:
    if given is None:
        return ranking["layer"].head(2).tolist()
    for name in given:
        if name not in convs:
            raise LesionError(f"recovery_layers must name conv layers, got {name!r}{closest(str(name), convs)}")
    return list(given)


def _recover(
    model: nn.Module, dataset: Dataset, split: Split, layers: Sequence[str], config: dict[str, Any], folder: Path,
    progress: bool,
) -> list[RecoveryResult]:
    """Both protocols in each layer, on a seeded subset of the train split, measured on ``split``."""
    if dataset.train is None:
        raise LesionError(f"dataset {dataset.name!r} has no train split: recovery needs one (or recovery=False)")
    data = Dataset(dataset.name, split, seeded_subset(dataset.train, config["recovery_samples"], config["seed"]))
    common = {"fraction": RECOVERY_FRACTION, "seed": config["seed"], "progress": progress}
    results = []
    for layer in layers:
        results.append(
            run_recovery(
                model, data, layer, "instances", folder / layer / "instances", instances=config["instances"],
                epochs=config["recovery_epochs"], **common,
            )
        )
        results.append(
            run_recovery(
                model, data, layer, "iterative", folder / layer / "iterative", min_epochs=config["recovery_epochs"],
                max_epochs=config["max_epochs"], max_iterations=config["max_iterations"], **common,
            )
        )
    return results


def _example_classes(given: Sequence[str] | None, names: Sequence[str]) -> list[str]:
    """The classes of Figure 16: ``given`` (checked) or five spread evenly over ``names``."""
    if given is not None:
        for name in given:
            if name not in names:
                raise LesionError(f"classes must be class names of the dataset, got {name!r}{closest(str(name), names)}")
        return list(given)
    picks = np.unique(np.linspace(0, len(names) - 1, min(5, len(names))).round().astype(int))
    return [names[i] for i in picks]


def _write_tables(study: StudyDir, result: Meyes2019VggResult) -> None:
    study.write_table("depth", result.depth)
    study.write_table("ranking", result.ranking)
    study.write_table("lesion_points", result.points)
    if result.recovery:
        study.write_table("recovery_history", pd.concat([r.history for r in result.recovery]))
        study.write_table("recovery_classes", pd.concat([r.classes for r in result.recovery]))


__all__ = [
    "FRACTIONS",
    "LESION_POINTS",
    "Meyes2019VggResult",
    "block_output",
    "point_plan",
    "run_meyes2019_vgg",
    "small_model_kwargs",
]
