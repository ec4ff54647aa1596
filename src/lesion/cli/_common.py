"""What every command shares: the console, option types defined once, and input parsers."""

from __future__ import annotations

import ctypes
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from lesion._errors import LesionError, check_int, closest

console = Console()
err = Console(stderr=True)

ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Zoo name (meyes2019-mlp, meyes2020-cnn, vgg19_bn, ...) or 'package.module:factory'. Default: the one recorded in --checkpoint."),
]
CheckpointOpt = Annotated[Path | None, typer.Option("--checkpoint", "-c", help="Weights: a lesion checkpoint (from `lesion train`) or a state dict. Loaded with weights_only=True.")]
DataOpt = Annotated[str, typer.Option("--data", "-d", help="Dataset: digits (embedded), mnist, fashion-mnist, kmnist, cifar10, folder.")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Where dataset files are (default: $LESION_DATA_DIR).")]
ModelArgOpt = Annotated[
    list[str] | None,
    typer.Option("--model-arg", help="Model factory argument KEY=VALUE (JSON value), e.g. in_features=64. Repeatable."),
]
DeviceOpt = Annotated[str, typer.Option(help="cpu, cuda (cuda:N) or mps: where the model runs (batches follow it).")]
RandomInitOpt = Annotated[bool, typer.Option("--random-init", help="No --checkpoint on purpose: lesion the network with random weights (torch.manual_seed(0)).")]
LimitOpt = Annotated[int | None, typer.Option(help="Evaluate on the first N samples only (N >= 1).")]
NormalizeOpt = Annotated[str | None, typer.Option("--normalize", help="unit ([0,1]), half (N(0.5,0.5), the 2020 CNN's) or standard.")]


class PlanKind(str, Enum):
    single = "single"
    pairs = "pairs"
    fraction = "fraction"
    cumulative = "cumulative"


class FractionBy(str, Enum):
    random = "random"
    similar = "similar"


class Method(str, Enum):
    zero = "zero"
    mean = "mean"


class Autocast(str, Enum):
    bf16 = "bf16"
    fp16 = "fp16"


class ExportFormat(str, Enum):
    csv = "csv"
    parquet = "parquet"


def parse_bytes(text: str | None, option: str = "--memory") -> int | None:
    """``"2G"`` -> 2147483648; ``None`` stays None; 0 or a malformed size is a `LesionError` naming ``option``."""
    from lesion.engine import parse_size

    return None if text is None else parse_size(text, option)


def tune_malloc() -> bool:
    """Let glibc keep large freed blocks (what ``GLIBC_TUNABLES`` does in the Makefile); True if set.

    The engine allocates and frees tens of MB per chunk of lesions; by default glibc returns each such
    block to the system and the next one page-faults back in (7 % of the 2020 CNN sweep here).
    """
    if not sys.platform.startswith("linux") or "GLIBC_TUNABLES" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 * 2**20)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def check_device(device: str) -> None:
    """Raise `LesionError` unless ``device`` (cpu, cuda, cuda:N, mps) is available here."""
    from lesion.engine import check_device as check

    check(device)


def at_least(option: str, value: int | None, low: int, high: int | None = None) -> None:
    """Raise `LesionError` unless ``value`` (None: unset) is an integer in low..high."""
    if value is not None:
        check_int(option, value, low, high)


def number_in(option: str, value: float | None, low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> None:
    """Raise `LesionError` unless ``value`` (None: unset) lies in the interval (open ends as flagged)."""
    if value is None:
        return
    ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if ok:
        return
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if value != value or value <= low:
        hint = f"just above {low:g}" if low_open else f"{low:g}"
    else:
        hint = f"just below {high:g}" if high_open else f"{high:g}"
    raise LesionError(f"{option}: expected a number in {interval}, got {value:g} (closest valid: {hint})")


def check_out_dir(path: Path, option: str = "--out") -> None:
    """Raise `LesionError` unless ``path`` is a directory or can be created (a writable parent)."""
    if path.exists() and not path.is_dir():
        raise LesionError(f"{option}: {str(path)!r} is a file; expected a directory (new or existing)")
    existing = next((p for p in (path, *path.absolute().parents) if p.exists()), Path("/"))
    if not existing.is_dir():
        raise LesionError(f"{option}: {str(path)!r} cannot be created: {str(existing)!r} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LesionError(f"{option}: {str(existing)!r} is not writable; choose a writable directory")


def check_out_file(path: Path, suffixes: tuple[str, ...], option: str = "--out") -> None:
    """Raise `LesionError` unless ``path`` can be written as a file with one of ``suffixes``."""
    if path.is_dir():
        raise LesionError(f"{option}: {str(path)!r} is a directory; expected a file name ending in {' or '.join(suffixes)}")
    if path.suffix not in suffixes:
        raise LesionError(
            f"{option}: expected a file name ending in {' or '.join(suffixes)}, got {str(path)!r} "
            f"(closest valid: {str(path.with_suffix(suffixes[0]))!r})"
        )
    parent = path.absolute().parent
    if not parent.is_dir():
        raise LesionError(f"{option}: the folder {str(parent)!r} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise LesionError(f"{option}: {str(path)!r} is not writable")


def load_net(
    model: str | None,
    checkpoint: Path | None,
    model_arg: list[str] | None,
    *,
    random_init: bool = False,
    weights: bool = True,
    device: str = "cpu",
) -> Any:
    """The model in eval mode on ``device``: built by name and loaded from ``checkpoint``.

    ``weights=True``: a zoo model without a checkpoint needs ``random_init`` (weights drawn with
    ``torch.manual_seed(0)``), so a random network is never lesioned by accident.
    """
    import torch

    from lesion.models import load_checkpoint

    check_device(device)
    if random_init and checkpoint is not None:
        raise LesionError("--random-init: give either --checkpoint or --random-init, not both")
    kwargs = parse_kwargs(model_arg)
    ckpt = load_checkpoint(checkpoint) if checkpoint is not None else None
    recorded = None if ckpt is None else ckpt.get("model")
    if model is not None and recorded is not None and model != recorded:
        raise LesionError(
            f"--checkpoint: {str(checkpoint)!r} holds a {recorded!r} network but --model says {model!r}; "
            f"leave out --model (or give --model {recorded})"
        )
    name = model or recorded
    if name is None:
        raise LesionError("--model: give a zoo name or 'package.module:factory' (the checkpoint names none)")
    if ckpt is None and weights and not random_init and ":" not in name:
        raise LesionError(
            f"--checkpoint: no weights given for {name!r}, so its weights would be random; give --checkpoint FILE, "
            "or --random-init to lesion a randomly initialised network on purpose"
        )
    if ckpt is not None and not kwargs:
        kwargs = dict(ckpt.get("model_kwargs", {}))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_net(name, kwargs, "--model-arg" if model_arg else "--checkpoint")
    if ckpt is not None:
        if "trained" not in ckpt:
            raise LesionError(f"--checkpoint: {str(checkpoint)!r} holds no trained weights; it has {sorted(ckpt)}")
        try:
            net.load_state_dict(ckpt["trained"])
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            detail = "; ".join(line.strip() for line in first[1:3]) or first[0]
            raise LesionError(f"--checkpoint: {str(checkpoint)!r} does not fit model {name!r} ({detail})") from None
    return net.to(device).eval()


def build_net(name: str, kwargs: dict[str, Any], option: str = "--model-arg") -> Any:
    """``build_model(name, **kwargs)``, with arguments the factory does not take named as a `LesionError`."""
    import inspect

    from lesion.models import build_model

    try:
        return build_model(name, **kwargs)
    except TypeError as exc:
        from lesion.models._load import _zoo

        factory = _zoo().get(name)
        takes = f"; it takes {inspect.signature(factory)}" if factory is not None and "kw" not in str(inspect.signature(factory)) else ""
        raise LesionError(f"{option}: model {name!r} cannot be built with arguments {kwargs} ({exc}){takes}") from None


def load_data(data: str, data_dir: Path | None, normalize: str | None, *, train: bool = True) -> Any:
    """The dataset ``data``, with ``--data`` and ``--normalize`` checked first."""
    from lesion.data import DATASETS, NORMALIZATIONS, load_dataset

    if data not in DATASETS:
        raise LesionError(f"--data: expected one of {DATASETS}, got {data!r}{closest(data, DATASETS)}")
    if normalize is not None and normalize not in NORMALIZATIONS:
        raise LesionError(f"--normalize: expected one of {NORMALIZATIONS}, got {normalize!r}{closest(normalize, NORMALIZATIONS)}")
    if data in ("digits", "folder") and normalize not in (None, "unit"):
        raise LesionError(
            f"--normalize: {data} has a fixed scaling ({'[0, 1]' if data == 'digits' else 'ImageNet mean/std'}); "
            f"expected 'unit' or no --normalize, got {normalize!r}"
        )
    if data == "folder":
        return load_dataset(data, data_dir)
    return load_dataset(data, data_dir, normalize=normalize, train=train)


def check_fit(net: Any, split: Any) -> None:
    """Raise `LesionError` unless ``split``'s inputs run through ``net`` to (B, n_classes) logits."""
    from lesion._sweep import check_fits

    check_fits(net, split)


def model_and_split(
    model: str | None,
    checkpoint: Path | None,
    model_arg: list[str] | None,
    data: str,
    data_dir: Path | None,
    normalize: str | None,
    limit: int | None,
    device: str = "cpu",
    random_init: bool = False,
) -> tuple[Any, Any]:
    """The model in eval mode on ``device`` and the first ``limit`` samples of the dataset's test split, checked to fit."""
    net = load_net(model, checkpoint, model_arg, random_init=random_init, device=device)
    return net, test_split(net, data, data_dir, normalize, limit)


def test_split(net: Any, data: str, data_dir: Path | None, normalize: str | None, limit: int | None) -> Any:
    """The first ``limit`` samples of the dataset's test split, checked to fit ``net``."""
    at_least("--limit", limit, 1)
    split = load_data(data, data_dir, normalize, train=False).test.head(limit)
    check_fit(net, split)
    return split


def print_summary(run: Any, top: int = 5) -> None:
    from lesion.report._summary import run_summary

    lesions = run.lesions()
    done, total = int(lesions["done"].sum()), len(lesions)
    if done < total:
        console.print(f"{done} of {total} lesions stored (the intact network counts as one); rerun the same command to resume.", highlight=False, soft_wrap=True)
    if not lesions["done"][lesions["key"] == "intact"].any():
        return
    summary = run_summary(run, top=top)
    console.print(summary.text, highlight=False, soft_wrap=True)


#: Seeds are 32-bit (numpy's and torch's generators both take them), a population at most this many.
MAX_SEED = 2**32 - 1
MAX_SEEDS = 100_000


def parse_seeds(text: str) -> list[int]:
    """``"0-19"`` -> [0, ..., 19]; ``"0,3,5-6"`` -> [0, 3, 5, 6]; sizes are checked before any list is built."""
    seeds: list[int] = []
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi if dash else lo)
        except ValueError:
            raise LesionError(f"--seeds: expected e.g. '0-19' or '0,3,5', got {text!r}") from None
        if max(first, last) > MAX_SEED:
            raise LesionError(f"--seeds: seeds are integers in 0..{MAX_SEED}, got {max(first, last)} (closest valid: {MAX_SEED})")
        if last < first:
            raise LesionError(f"--seeds: the range {part.strip()!r} is empty; expected the lower seed first (closest valid: '{last}-{first}')")
        if len(seeds) + last - first + 1 > MAX_SEEDS:
            raise LesionError(
                f"--seeds: at most {MAX_SEEDS:,} networks per population, got {len(seeds) + last - first + 1:,} in {text!r} "
                f"(closest valid: '{first}-{first + MAX_SEEDS - 1 - len(seeds)}')"
            )
        seeds.extend(range(first, last + 1))
    if len(set(seeds)) != len(seeds):
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})[:5]
        raise LesionError(f"--seeds: each seed once, got {repeated} more than once in {text!r}")
    return seeds


def parse_kwargs(items: list[str] | None) -> dict[str, Any]:
    """``["in_features=64", "hidden=[20,10]"]`` -> {"in_features": 64, "hidden": [20, 10]} (JSON values)."""
    import json

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise LesionError(f"--model-arg: expected KEY=VALUE with KEY a Python name, e.g. in_features=64, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


# --- the engine options of every study command: one `EngineConfig` -------------------------

ENGINE_OPTIONS: dict[str, tuple[Any, Any]] = {
    "engine_kind": (Annotated[str, typer.Option("--engine", help="auto, fast or reference (one full forward per lesion).")], "auto"),
    "device": (Annotated[str, typer.Option("--device", help="cpu, cuda or mps: where the lesion sweeps run.")], "cpu"),
    "batch_size": (Annotated[int, typer.Option("--batch-size", help="Samples per forward pass of the sweeps.")], 256),
    "memory": (Annotated[str | None, typer.Option("--memory", help="Memory budget of the fast engine, e.g. 2G (default: automatic).")], None),
    "autocast": (Annotated[Autocast | None, typer.Option("--autocast", help="Sweep in bf16 or fp16; the intact network and --float32-check lesions are re-checked in float32.")], None),
    "float32_check": (Annotated[int, typer.Option("--float32-check", help="With --autocast: lesions re-evaluated in float32.")], 16),
    "channels_last": (Annotated[bool, typer.Option("--channels-last/--no-channels-last", help="Fast engine: channels-last inputs (faster convolutions on GPUs).")], False),
    "compile": (Annotated[bool, typer.Option("--compile/--no-compile", help="Fast engine: torch.compile the network after each cut.")], False),
    "backend": (Annotated[str, typer.Option("--backend", help="local, or ray: the sweeps' lesions in shards on a Ray cluster (pip install 'lesion[ray]').")], "local"),
    "address": (Annotated[str | None, typer.Option("--address", help="With --backend ray: the cluster's address (default: a local instance).")], None),
}


def with_engine_options(command: Any) -> Any:
    """``command`` (which takes ``engine: EngineConfig``) with the options of `ENGINE_OPTIONS` in its place."""
    import functools
    import inspect
    import typing

    from lesion.studies._engine import EngineConfig

    hints = typing.get_type_hints(command, include_extras=True)
    params = [p.replace(annotation=hints[p.name]) for p in inspect.signature(command).parameters.values() if p.name != "engine"]
    params += [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind, default=default)
        for name, (kind, default) in ENGINE_OPTIONS.items()
    ]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        settings = {name: kwargs.pop(name) for name in ENGINE_OPTIONS}
        settings["engine"] = settings.pop("engine_kind")
        settings["autocast"] = settings["autocast"].value if settings["autocast"] else None
        return command(**kwargs, engine=EngineConfig.of(**settings))

    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


def local_engine(engine: Any, command: str, why: str) -> Any:
    """``engine`` (an ``EngineConfig``, default: the defaults) if it runs here; `LesionError` for ``--backend ray`` /
    ``--address``, which ``command`` does not take (``why``: what it does in this process instead)."""
    from lesion.studies._engine import EngineConfig

    engine = engine or EngineConfig()
    if engine.address is not None:
        raise LesionError(f"--address: for --backend ray only, which {command} does not take; got --address {engine.address!r}")
    if engine.backend != "local":
        raise LesionError(f"--backend: {why} (--backend {engine.backend} shards sweeps only); use --backend local")
    return engine
