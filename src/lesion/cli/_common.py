"""What every command shares: the console, option types defined once, and input parsers."""

from __future__ import annotations

import ctypes
import os
import re
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from lesion._errors import LesionError

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
DeviceOpt = Annotated[str, typer.Option(help="cpu, cuda or mps: where the model runs (batches follow it).")]
NormalizeOpt = Annotated[str | None, typer.Option("--normalize", help="unit ([0,1]), half (N(0.5,0.5), the 2020 CNN's) or standard.")]


class PlanKind(str, Enum):
    single = "single"
    pairs = "pairs"
    cumulative = "cumulative"


class Method(str, Enum):
    zero = "zero"
    mean = "mean"


class Autocast(str, Enum):
    bf16 = "bf16"
    fp16 = "fp16"


class ExportFormat(str, Enum):
    csv = "csv"
    parquet = "parquet"


def parse_bytes(text: str | None) -> int | None:
    """``"2G"`` -> 2147483648; ``None`` stays None."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)i?[bB]?\s*", text)
    if not match:
        raise LesionError(f"--memory: expected a size like 512M or 2G, got {text!r}")
    scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[match.group(2).lower()]
    return int(float(match.group(1)) * scale)


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
    """Raise `LesionError` unless ``device`` (cpu, cuda, mps) is available here."""
    import torch

    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available.get(device, False):
        usable = [name for name, ok in available.items() if ok]
        raise LesionError(f"--device: expected one of {usable} (available here), got {device!r}")


def model_and_split(
    model: str | None,
    checkpoint: Path | None,
    model_arg: list[str] | None,
    data: str,
    data_dir: Path | None,
    normalize: str | None,
    limit: int | None,
    device: str = "cpu",
) -> tuple[Any, Any]:
    """The model in eval mode on ``device`` and the first ``limit`` samples of the dataset's test split."""
    from lesion.data import load_dataset
    from lesion.models import load_model

    check_device(device)
    net = load_model(model, checkpoint, **parse_kwargs(model_arg)).to(device)
    return net, load_dataset(data, data_dir, normalize=normalize, train=False).test.head(limit)


def print_summary(run: Any, top: int = 5) -> None:
    from lesion.report._summary import run_summary

    summary = run_summary(run, top=top)
    console.print(summary.text, highlight=False, soft_wrap=True)


def parse_seeds(text: str) -> list[int]:
    """``"0-19"`` -> [0, ..., 19]; ``"0,3,5-6"`` -> [0, 3, 5, 6]."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            seeds.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise LesionError(f"--seeds: expected e.g. '0-19' or '0,3,5', got {text!r}") from None
    return seeds


def parse_kwargs(items: list[str] | None) -> dict[str, Any]:
    """``["in_features=64", "hidden=[20,10]"]`` -> {"in_features": 64, "hidden": [20, 10]} (JSON values)."""
    import json

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LesionError(f"--model-arg: expected KEY=VALUE, got {item!r}")
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
