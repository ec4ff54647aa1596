"""Building models by name or import path, and loading checkpoints without running their code."""

from __future__ import annotations

import hashlib
import importlib
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lesion._errors import LesionError, closest

CHECKPOINT_FORMAT = "lesion-checkpoint/1"


def _zoo() -> dict[str, Callable[..., nn.Module]]:
    from lesion.models import _vgg
    from lesion.models._meyes import meyes2019_mlp, meyes2020_cnn

    zoo: dict[str, Callable[..., nn.Module]] = {
        "meyes2019-mlp": meyes2019_mlp,
        "meyes2020-cnn": meyes2020_cnn,
    }
    for depth in (11, 13, 16, 19):
        for bn in (False, True):
            name = f"vgg{depth}{'_bn' if bn else ''}"
            zoo[name] = lambda d=depth, b=bn, **kw: _vgg.vgg(d, batch_norm=b, **kw)
    return zoo


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """A fresh model by zoo name (``meyes2020-cnn``, ``vgg19_bn``) or ``package.module:factory``."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise LesionError(
                f"model {name!r}: cannot import factory {attr!r} from module {module_name!r} ({exc}); "
                "expected 'package.module:factory' importable from the current environment"
            ) from None
        model = factory(**kwargs)
        if not isinstance(model, nn.Module):
            raise LesionError(f"model {name!r}: the factory returned {type(model).__name__}, not a torch.nn.Module")
        return model
    zoo = _zoo()
    if name not in zoo:
        raise LesionError(f"unknown model {name!r}; expected one of {sorted(zoo)} or 'package.module:factory'{closest(name, zoo)}")
    return zoo[name](**kwargs)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``: tensors and plain data only, never code.

    Returns the lesion checkpoint dict, or ``{"trained": state_dict}`` for a bare state dict
    (e.g. a torchvision weights file).
    """
    path = Path(path)
    if not path.is_file():
        raise LesionError(f"checkpoint {str(path)!r} does not exist or is not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LesionError(
            f"checkpoint {str(path)!r} was refused: it is not a plain weights file that loads with "
            f"weights_only=True ({first}). Files that need arbitrary code to unpickle are never loaded."
        ) from None
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        return dict(obj)
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        return {"trained": obj["state_dict"]}
    if isinstance(obj, Mapping) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"trained": obj}
    raise LesionError(f"checkpoint {str(path)!r}: expected a lesion checkpoint or a state dict, got {type(obj).__name__}")


def load_model(
    name: str | None = None,
    checkpoint: str | Path | None = None,
    *,
    state: str = "trained",
    **kwargs: Any,
) -> nn.Module:
    """Build a model and load weights, in eval mode.

    Parameters
    ----------
    name : str, optional
        Zoo name or ``package.module:factory``; default: the one recorded in a lesion checkpoint.
    checkpoint : path, optional
        A lesion checkpoint (from ``lesion train``) or a bare state dict.
    state : {"trained", "initial"}, default="trained"
        Which weights of a lesion checkpoint to load.
    **kwargs
        Factory arguments; default: those recorded in the checkpoint.
    """
    ckpt = load_checkpoint(checkpoint) if checkpoint is not None else None
    if name is None:
        if ckpt is None or "model" not in ckpt:
            raise LesionError("model: give a zoo name or 'package.module:factory' (the checkpoint names none)")
        name = str(ckpt["model"])
    if ckpt is not None and not kwargs:
        kwargs = dict(ckpt.get("model_kwargs", {}))
    model = build_model(name, **kwargs)
    if ckpt is not None:
        if state not in ckpt:
            raise LesionError(f"checkpoint {str(checkpoint)!r} holds no {state!r} weights; it has {sorted(ckpt)}")
        try:
            model.load_state_dict(ckpt[state])
        except RuntimeError as exc:
            raise LesionError(f"checkpoint {str(checkpoint)!r} does not fit model {name!r}: {exc}") from None
    return model.eval()


def model_fingerprint(model: nn.Module) -> str:
    """sha256 of the module structure (its repr, which holds every shape) and every parameter and buffer."""
    h = hashlib.sha256(repr(model).encode())
    for name, value in model.state_dict().items():
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
