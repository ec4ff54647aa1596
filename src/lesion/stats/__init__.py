"""Statistics for lesion studies: paired tests, FDR control, correlations, population summaries.

Pure functions on numpy arrays, pandas DataFrames and finished runs; nothing here runs a model.
"""

from lesion.stats._correlation import Correlation, correlate, correlations_by_group
from lesion.stats._density import kde
from lesion.stats._draws import class_changes, class_drops, layer_effects
from lesion.stats._effects import (
    attribute_correlations,
    attribute_effect_table,
    attributes_wide,
    lesion_effects,
    pair_analysis,
    pair_parts,
    ranked_pairs,
    single_unit,
    unit_ablation_selectivity,
    unit_attributes,
    unit_drops,
    with_tests,
)
from lesion.stats._intervals import correlation_ci, correlation_table
from lesion.stats._population import ClassDropSpread, class_drop_spread
from lesion.stats._shapley import exact_interaction, exact_shapley
from lesion.stats._spread import Spread, spread
from lesion.stats._synergy import OVERALL, SAMPLE_CATEGORIES, pair_synergy, sample_categories
from lesion.stats._tests import benjamini_hochberg, mcnemar_exact

__all__ = [
    "OVERALL",
    "SAMPLE_CATEGORIES",
    "ClassDropSpread",
    "Correlation",
    "Spread",
    "attribute_correlations",
    "attribute_effect_table",
    "attributes_wide",
    "benjamini_hochberg",
    "class_changes",
    "class_drop_spread",
    "class_drops",
    "correlate",
    "correlation_ci",
    "correlation_table",
    "correlations_by_group",
    "exact_interaction",
    "exact_shapley",
    "kde",
    "layer_effects",
    "lesion_effects",
    "mcnemar_exact",
    "pair_analysis",
    "pair_parts",
    "pair_synergy",
    "ranked_pairs",
    "sample_categories",
    "single_unit",
    "spread",
    "unit_ablation_selectivity",
    "unit_attributes",
    "unit_drops",
    "with_tests",
]
