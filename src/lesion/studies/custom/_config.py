"""The study file's schema (pydantic v2): what ``lesion run STUDY.toml`` accepts, checked before anything is written.

An unknown key names the closest valid key and its path (``plans[1].fracton``); a wrong value
says what was expected and what was given (`lesion.studies._validate`).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lesion._errors import LesionError
from lesion.studies._engine import EngineConfig
from lesion.studies._validate import validation_error

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainSection(_Section):
    """Train the model from scratch (SGD with momentum on the cross-entropy) when no checkpoint is given."""

    epochs: int = Field(default=10, ge=1)
    lr: float = Field(default=0.01, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    batch_size: int = Field(default=64, ge=1)


class ModelSection(_Section):
    """``name``: a zoo name or ``package.module:factory`` (modules beside the study file import);
    ``args``: factory arguments; ``checkpoint``: trained weights (a lesion checkpoint or a state
    dict); ``initial``: initial weights (for the Mann-Whitney attribute; default: a lesion
    checkpoint's own); ``train``: train here instead of loading a checkpoint."""

    name: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    checkpoint: Path | None = None
    initial: Path | None = None
    train: TrainSection | None = None

    @model_validator(mode="after")
    def _source(self) -> ModelSection:
        if self.name is None and self.checkpoint is None:
            raise ValueError("give name (a zoo name or 'package.module:factory') or checkpoint")
        if self.train is not None and self.checkpoint is not None:
            raise ValueError("give checkpoint (trained weights) or train (train here), not both")
        if self.train is not None and self.name is None:
            raise ValueError("train needs name (the model to build)")
        return self


class DataSection(_Section):
    """``name``: a zoo dataset (digits, mnist, fashion-mnist, kmnist, cifar10), ``folder`` (with
    ``train_dir`` / ``val_dir``) or ``package.module:function`` returning a `Split` (or a
    `Dataset`); ``limit``: the first N evaluation samples; ``subset``: a seeded random N of them."""

    name: str = "digits"
    dir: Path | None = None
    train_dir: Path | None = None
    val_dir: Path | None = None
    normalize: Literal["unit", "half", "standard"] | None = None
    limit: int | None = Field(default=None, ge=1)
    subset: int | None = Field(default=None, ge=1)


class _Plan(_Section):
    layers: str
    method: Literal["zero", "mean"] = "zero"
    name: str | None = None


class SinglePlan(_Plan):
    """Every selected unit alone."""

    kind: Literal["single"]


class PairsPlan(_Plan):
    """Every pair of selected units within a layer."""

    kind: Literal["pairs"]


class FractionPlan(_Plan):
    """A proportion of each layer: ``random`` draws, ``similar`` groups, or ``ranked`` by an attribute."""

    kind: Literal["fraction"]
    fractions: list[Annotated[float, Field(gt=0, le=1)]] = Field(min_length=1)
    select: Literal["random", "similar", "ranked"] = "random"
    draws: int = Field(default=10, ge=1)
    attribute: Literal["l1", "l2", "mw_p", "selectivity"] | None = None
    order: Literal["ascending", "descending"] = "ascending"

    @model_validator(mode="after")
    def _ranked(self) -> FractionPlan:
        if (self.select == "ranked") != (self.attribute is not None):
            raise ValueError("select = 'ranked' goes with attribute (and attribute with select = 'ranked')")
        return self


class CumulativePlan(_Plan):
    """The selected units lesioned cumulatively, ``step`` more at a time (`lesion.cumulative`): in one
    random order per seed (``order = "random"``), or by an ``attribute`` (both directions, high to low
    and low to high, are lesioned; ``order`` names the one read first)."""

    kind: Literal["cumulative"]
    order: Literal["random", "ascending", "descending"] = "random"
    attribute: Literal["l1", "l2", "mw_p", "selectivity"] | None = None
    step: int = Field(default=1, ge=1)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])

    @model_validator(mode="after")
    def _attribute_order(self) -> CumulativePlan:
        if (self.order == "random") == (self.attribute is not None):
            raise ValueError("order = 'random' takes no attribute; order = 'ascending' / 'descending' needs one")
        return self


PlanSection = Annotated[SinglePlan | PairsPlan | FractionPlan | CumulativePlan, Field(discriminator="kind")]


class ShapleyAnalysis(_Section):
    """Shapley values of units (``lesion.shapley``): ``layers`` the players' units, one per unit or per
    layer (``group``); sampled ``permutations`` (a budget) until every standard error of overall top-1
    is below ``tolerance``, or ``exact``; ``pairs`` like ``"fc1:3,fc1:7"`` get interaction indices."""

    layers: str
    group: Literal["unit", "layer"] = "unit"
    permutations: int = Field(default=100, ge=1)
    tolerance: float | None = Field(default=None, gt=0)
    sampling: Literal["plain", "antithetic", "per-sample"] = "plain"
    exact: bool = False
    pairs: list[str] = Field(default_factory=list)
    loss: bool = False


class ImproveAnalysis(_Section):
    """Lesions that raise accuracy (``lesion.improve``), chosen on a ``validation`` part of the
    training split and reported once on the evaluation split: overall top-1, or ``target``'s top-1
    with no other class dropping more than ``tolerance``; greedy with a ``beam``, at most ``max_size`` units."""

    layers: str
    target: int | None = Field(default=None, ge=0)
    tolerance: float = Field(default=0.0, ge=0, le=1)
    validation: float = Field(default=0.2, gt=0, lt=1)
    beam: int = Field(default=1, ge=1)
    max_size: int | None = Field(default=None, ge=1)


class AnalysesSection(_Section):
    """Which analyses run (each needs the plans it reads; those without are skipped and said so)."""

    effects: bool = True
    alpha: float = Field(default=0.05, gt=0, lt=1)
    pairs: bool = True
    attributes: bool = False
    activations: dict[str, str] = Field(default_factory=dict)
    aes: bool = True
    correlations: bool = False
    depth: bool = True
    embedding: Literal["tsne", "umap"] | None = None
    shapley: ShapleyAnalysis | None = None
    improve: ImproveAnalysis | None = None


class ReportSection(_Section):
    """``figures``: PNG + SVG under figures/; ``summary``: summary.md; ``top``: lesions listed;
    ``plan``: the plan whose lesions the headline ranks (default: every plan's)."""

    figures: bool = True
    summary: bool = True
    top: int = Field(default=5, ge=1)
    plan: str | None = None


class StudyFile(_Section):
    """A study of any model: ``[model]``, ``[data]``, ``[[plans]]``, ``[engine]``, ``[analyses]``, ``[report]``."""

    name: str = "study"
    seed: int = Field(default=0, ge=0)
    model: ModelSection
    data: DataSection = Field(default_factory=DataSection)
    plans: list[PlanSection] = Field(min_length=1)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    analyses: AnalysesSection = Field(default_factory=AnalysesSection)
    report: ReportSection = Field(default_factory=ReportSection)

    @model_validator(mode="after")
    def _names(self) -> StudyFile:
        names = [plan_name(plan) for plan in self.plans]
        if len(set(names)) < len(names):
            raise ValueError(f"plans need distinct names (give name = ...), got {names}")
        if self.report.plan is not None and self.report.plan not in names:
            raise ValueError(f"report.plan must name a plan, one of {names}, got {self.report.plan!r}")
        return self

    @model_validator(mode="after")
    def _local_analyses(self) -> StudyFile:
        if self.engine.backend != "local":
            for name in ("shapley", "improve"):
                if getattr(self.analyses, name) is not None:
                    raise ValueError(
                        f"analyses.{name} runs in this process (engine.backend = {self.engine.backend!r} shards sweeps only): "
                        f"set engine.backend = 'local' or leave analyses.{name} out"
                    )
        return self


def plan_name(plan: SinglePlan | PairsPlan | FractionPlan | CumulativePlan) -> str:
    """The plan's name in the run: ``name``, else its kind (``fraction-<select>`` for fractions)."""
    if plan.name is not None:
        return plan.name
    return f"fraction-{plan.select}" if isinstance(plan, FractionPlan) else plan.kind


def load_study_file(
    source: str | Path | Mapping[str, Any], engine: Mapping[str, Any] | None = None
) -> tuple[StudyFile, Path]:
    """The checked study and the folder its relative paths start from (the file's, or the working directory).

    ``engine`` settings (e.g. ``--device`` of the command line) replace the file's ``[engine]`` ones.
    """
    if isinstance(source, Mapping):
        settings, base = dict(source), Path.cwd()
    else:
        path = Path(source)
        if not path.is_file():
            raise LesionError(f"study file {str(path)!r} does not exist or is not a file")
        try:
            settings = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise LesionError(f"study file {str(path)!r}: not valid TOML ({exc})") from None
        base = path.resolve().parent
    if engine:
        settings["engine"] = {**settings.get("engine", {}), **engine}
    try:
        return StudyFile.model_validate(settings), base
    except ValidationError as exc:
        raise validation_error(exc, StudyFile) from None
