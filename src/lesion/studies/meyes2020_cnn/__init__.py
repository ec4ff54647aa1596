"""Meyes et al. (2020): layer lesions, AS / AES selectivity, activation spaces (``lesion reproduce meyes2020-cnn``)."""

from lesion.studies.meyes2020_cnn._report import PAPER
from lesion.studies.meyes2020_cnn._stages import Meyes2020Result, run_meyes2020_cnn

__all__ = ["PAPER", "Meyes2020Result", "run_meyes2020_cnn"]
