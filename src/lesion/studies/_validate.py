"""pydantic's validation errors as one `LesionError`: the path of each (``plans[1].fraction``), the closest valid key."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from lesion._errors import LesionError, closest


def validation_error(exc: ValidationError, model: type[BaseModel], where: str = "") -> LesionError:
    """One `LesionError` listing every error of ``exc`` (raised validating ``model``) with its path.

    An unknown key names the closest valid key at its place; a wrong value says what was expected
    and what was given. ``where`` prefixes each path (e.g. ``engine``).
    """
    lines = []
    for error in exc.errors():
        path, fields = _walk(model, error["loc"], where)
        if error["type"] == "extra_forbidden":
            key = str(error["loc"][-1])
            lines.append(f"{path}: unknown key{closest(key, fields, n=1) if fields else ''}")
        elif error["type"] == "missing":
            lines.append(f"{path}: required, missing")
        else:
            lines.append(f"{path}: {error['msg']}, got {error.get('input')!r}")
    return LesionError("; ".join(lines))


def _walk(model: type[BaseModel], loc: tuple[Any, ...], where: str) -> tuple[str, list[str]]:
    """The readable path of ``loc`` (tags of tagged unions left out) and the keys valid beside its last part."""
    path, current, parent = where, model, model
    for part in loc:
        parent = current
        if isinstance(part, int):
            path += f"[{part}]"
            current = _element(current)
            continue
        tagged = _tagged(current, part)
        if tagged is not None:
            current = tagged
            continue
        path += f".{part}" if path else str(part)
        current = _field(current, part)
    return path, sorted({name for m in _models(parent) for name in m.model_fields})


def _members(tp: Any) -> list[Any]:
    """The members of a union (and of Annotated / Optional); ``tp`` itself otherwise."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _members(typing.get_args(tp)[0])
    if origin is typing.Union or isinstance(tp, types.UnionType):
        return [m for arg in typing.get_args(tp) for m in _members(arg)]
    return [tp]


def _models(tp: Any) -> list[type[BaseModel]]:
    return [m for m in _members(tp) if isinstance(m, type) and issubclass(m, BaseModel)]


def _element(tp: Any) -> Any:
    for member in _members(tp):
        if typing.get_origin(member) in (list, tuple) and typing.get_args(member):
            return typing.get_args(member)[0]
    return None


def _tagged(tp: Any, tag: str) -> type[BaseModel] | None:
    """The member of a tagged union whose ``kind`` is ``tag``."""
    for model in _models(tp):
        field = model.model_fields.get("kind")
        if field is not None and tag in typing.get_args(field.annotation):
            return model
    return None


def _field(tp: Any, name: str) -> Any:
    for model in _models(tp):
        if name in model.model_fields:
            return model.model_fields[name].annotation
    for member in _members(tp):
        if typing.get_origin(member) is dict:
            return typing.get_args(member)[1]
    return None
