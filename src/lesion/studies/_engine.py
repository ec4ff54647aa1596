"""The ``[engine]`` settings of every study: one object, handed to `lesion.sweep` in one place.

Every study function takes ``engine: EngineConfig | None``; every study command (``--device``,
``--autocast``, ``--channels-last``, ...) and the study file's ``[engine]`` section build one.
Changing how the engine takes its options later touches this file only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from torch import nn

from lesion._sweep import sweep
from lesion.data import Split
from lesion.engine import EngineOptions, check_device, parse_size
from lesion.plans import Plan
from lesion.store import Run
from lesion.studies._validate import validation_error


class EngineConfig(BaseModel):
    """How lesions are evaluated: engine, device, precision, memory, batch size, backend.

    ``memory`` takes bytes or a size such as ``"2G"``. ``device`` must be available here.
    ``backend = "ray"`` evaluates the sweeps' lesions on a Ray cluster (``address``: its head;
    default: a local instance), with the same stored outcomes as ``"local"``.

    >>> EngineConfig(memory="512M").memory
    536870912
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    engine: Literal["auto", "fast", "reference"] = "auto"
    device: Literal["cpu", "cuda", "mps"] = "cpu"
    batch_size: int = Field(default=256, ge=1)
    memory: int | None = Field(default=None, ge=1)
    autocast: Literal["bf16", "fp16"] | None = None
    float32_check: int = Field(default=16, ge=0)
    channels_last: bool = False
    compile: bool = False
    backend: Literal["local", "ray"] = "local"
    address: str | None = None

    @field_validator("memory", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return parse_size(value) if isinstance(value, str) else value

    @field_validator("device")
    @classmethod
    def _available(cls, device: str) -> str:
        check_device(device)
        return device

    @classmethod
    def of(cls, **settings: Any) -> EngineConfig:
        """Build one from keyword settings, or raise `LesionError` naming the setting (the CLI's way)."""
        try:
            return cls(**settings)
        except ValidationError as exc:
            raise validation_error(exc, cls, "engine") from None

    def sweep(self, model: nn.Module, split: Split, plans: Plan | Sequence[Plan], out: str | Path, **kwargs: Any) -> Run:
        """`lesion.sweep` with these settings (``kwargs``: model_name, config, progress, ...).

        The model runs on ``device`` for the sweep only and is moved back afterwards.
        """
        with on_device(model, self.device):
            return sweep(model, split, plans, out, options=self.options(), backend=self.backend, address=self.address, **kwargs)

    def options(self) -> EngineOptions:
        """These settings as the engine's own validated :class:`lesion.engine.EngineOptions`."""
        return EngineOptions(
            engine=self.engine, device=self.device, batch_size=self.batch_size, memory=self.memory, autocast=self.autocast,
            float32_check=self.float32_check, channels_last=self.channels_last, compile=self.compile,
        )


@contextmanager
def on_device(model: nn.Module, device: str) -> Iterator[nn.Module]:
    """``model`` moved to ``device`` inside the block and back to where it was after it."""
    before = next(model.parameters()).device if any(True for _ in model.parameters()) else None
    model.to(device)
    try:
        yield model
    finally:
        if before is not None:
            model.to(before)
