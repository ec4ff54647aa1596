"""Zhou et al. (2018): class-specific importance of units, training variants, random rotation (``lesion reproduce zhou2018``)."""

from lesion.studies.zhou2018._stages import SIZES, Zhou2018Result, run_zhou2018

__all__ = ["SIZES", "Zhou2018Result", "run_zhou2018"]
