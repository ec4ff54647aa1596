"""Meyes et al. (2019), VGG: filter-group lesions across depth and recovery training (``lesion reproduce meyes2019-vgg``)."""

from lesion.studies.meyes2019_vgg._stages import (
    FRACTIONS,
    Meyes2019VggResult,
    block_output,
    point_plan,
    run_meyes2019_vgg,
)

__all__ = ["FRACTIONS", "Meyes2019VggResult", "block_output", "point_plan", "run_meyes2019_vgg"]
