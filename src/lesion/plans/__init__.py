"""Plans: ordered, reproducible lists of lesions made by selectors."""

from lesion.plans._cumulative import area_under_curve, cumulative, curves
from lesion.plans._fraction import SELECTORS, fraction, group_size, unit_weights
from lesion.plans._plan import Plan, pairs, single

__all__ = ["SELECTORS", "Plan", "area_under_curve", "cumulative", "curves", "fraction", "group_size", "pairs", "single", "unit_weights"]
