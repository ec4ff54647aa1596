"""`EngineOptions`: how lesions are evaluated, validated once when built and passed through unchanged."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

import torch

from lesion._errors import LesionError, check_int, closest
from lesion.engine._reference import AUTOCAST

ENGINES = ("auto", "fast", "reference")
DEVICES = ("cpu", "cuda", "mps")
#: Lesions re-evaluated in float32 (besides the intact network) when a sweep runs under autocast.
FLOAT32_CHECK = 16


@dataclass(frozen=True)
class EngineOptions:
    """Engine settings of :func:`lesion.evaluate` and :func:`lesion.sweep`; invalid values raise `LesionError`.

    Attributes
    ----------
    engine : {"auto", "fast", "reference"}
    device : str, optional
        ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; must be available here. None: wherever the model is.
    batch_size : int
        Data samples per forward pass (>= 1).
    memory : int, optional
        Byte budget of the fast engine's tiled activations (>= 1); None: automatic.
    autocast : {"bf16", "fp16"}, optional
        Evaluate under ``torch.autocast`` in that precision; None: float32.
    channels_last, compile : bool
        Fast-engine options (channels-last inputs; ``torch.compile`` after each cut).
    float32_check : int
        Under ``autocast``: lesions that :func:`lesion.sweep` re-evaluates in float32 (>= 0).
    """

    engine: str = "auto"
    device: str | None = None
    batch_size: int = 256
    memory: int | None = None
    autocast: str | None = None
    channels_last: bool = False
    compile: bool = False
    float32_check: int = FLOAT32_CHECK

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise LesionError(f"engine: expected one of {ENGINES}, got {self.engine!r}{closest(str(self.engine), ENGINES)}")
        if self.device is not None:
            check_device(self.device)
        check_int("batch_size", self.batch_size, 1)
        if self.memory is not None:
            check_int("memory", self.memory, 1, why=" bytes")
        if self.autocast is not None and self.autocast not in AUTOCAST:
            raise LesionError(
                f"autocast must be one of {tuple(AUTOCAST)} (or None for float32), got {self.autocast!r}"
                f"{closest(str(self.autocast), AUTOCAST)}"
            )
        if self.autocast is not None and self.device is not None and not torch.amp.is_autocast_available(torch.device(self.device).type):
            raise LesionError(f"autocast {self.autocast!r}: torch has no autocast for device {self.device!r}")
        for name in ("channels_last", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise LesionError(f"{name}: expected True or False, got {getattr(self, name)!r}")
        check_int("float32_check", self.float32_check, 0, why=" lesions")

    def engine_kwargs(self) -> dict[str, Any]:
        """The keywords of the engines' internal functions (everything but device and float32_check)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("device", "float32_check", "batch_size", "engine")}


def parse_size(text: str, name: str = "memory") -> int:
    """``"2G"`` -> 2147483648 bytes (k, M, G, T; an optional ``iB``/``B``); 0 or a malformed size is a `LesionError`."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)i?[bB]?\s*", text)
    if not match:
        raise LesionError(f"{name}: expected a size like 512M or 2G, got {text!r}")
    size = int(float(match.group(1)) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[match.group(2).lower()])
    if size < 1:
        raise LesionError(f"{name}: expected a size of at least 1 byte, e.g. 64M, got {text!r} (closest valid: 1)")
    return size


def check_device(device: str) -> None:
    """Raise `LesionError` unless ``device`` (cpu, cuda, cuda:N, mps) is available here."""
    kind, _, index = str(device).partition(":")
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    usable = [name for name, ok in available.items() if ok]
    if kind not in available or not available[kind] or (index and not (kind == "cuda" and index.isdigit())):
        raise LesionError(f"--device: expected one of {usable} (available here), got {device!r}{closest(str(device), usable)}")
    if index and int(index) >= torch.cuda.device_count():
        raise LesionError(f"--device: this machine has {torch.cuda.device_count()} CUDA device(s), got {device!r}")


def engine_options(options: EngineOptions | None, **keywords: Any) -> EngineOptions:
    """``options``, or one built from the keyword form (``batch_size=...``, ``engine=...``) of the same settings.

    Keywords that differ from the defaults cannot be combined with ``options``.
    """
    if options is None:
        return EngineOptions(**keywords)
    if not isinstance(options, EngineOptions):
        raise LesionError(f"options: expected an EngineOptions, got {type(options).__name__}")
    defaults = EngineOptions()
    clash = sorted(key for key, value in keywords.items() if value != getattr(defaults, key))
    if clash:
        raise LesionError(f"options: give the engine settings either as options= or as keywords, not both (keywords given: {clash})")
    return options
