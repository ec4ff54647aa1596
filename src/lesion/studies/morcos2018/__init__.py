"""Morcos et al. (2018): reliance on single directions and generalisation (``lesion reproduce morcos2018``)."""

from lesion.studies.morcos2018._stages import SIZES, Morcos2018Result, run_morcos2018

__all__ = ["SIZES", "Morcos2018Result", "run_morcos2018"]
