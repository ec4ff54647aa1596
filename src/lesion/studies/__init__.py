"""The studies: the papers' as packages, and any model's from a study file.

`STUDIES` is the registry: name -> study package. Each package follows the layout of
:mod:`lesion.studies._study` and has a ``cli`` module whose ``command`` becomes
``lesion reproduce NAME``. A new study is one package plus one line here.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from lesion._errors import LesionError, closest

STUDIES: dict[str, str] = {
    "meyes2019-mlp": "lesion.studies.meyes2019_mlp",
    "meyes2019-vgg": "lesion.studies.meyes2019_vgg",
    "meyes2020-cnn": "lesion.studies.meyes2020_cnn",
    "morcos2018": "lesion.studies.morcos2018",
    "zhou2018": "lesion.studies.zhou2018",
}


def study_command(name: str) -> ModuleType:
    """The ``cli`` module of the registered study ``name`` (its ``command`` is ``lesion reproduce NAME``)."""
    if name not in STUDIES:
        raise LesionError(f"study must be one of {sorted(STUDIES)}, got {name!r}{closest(name, STUDIES)}")
    return importlib.import_module(f"{STUDIES[name]}.cli")


__all__ = ["STUDIES", "study_command"]
