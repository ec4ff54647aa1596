"""Meyes et al. (2019), shallow MLP: single and pairwise unit lesions of a population (``lesion reproduce meyes2019-mlp``)."""

from lesion.studies.meyes2019_mlp._stages import Meyes2019Result, run_meyes2019_mlp

__all__ = ["Meyes2019Result", "run_meyes2019_mlp"]
