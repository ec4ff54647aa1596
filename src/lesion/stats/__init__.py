"""Statistics for lesion studies: paired tests, FDR control, correlations, population summaries.

Pure functions on numpy arrays and pandas DataFrames; nothing here runs a model.
"""

from lesion.stats._correlation import Correlation, correlate, correlations_by_group
from lesion.stats._density import kde
from lesion.stats._intervals import correlation_ci, correlation_table
from lesion.stats._population import ClassDropSpread, class_drop_spread
from lesion.stats._synergy import OVERALL, SAMPLE_CATEGORIES, pair_synergy, sample_categories
from lesion.stats._tests import benjamini_hochberg, mcnemar_exact

__all__ = [
    "OVERALL",
    "SAMPLE_CATEGORIES",
    "ClassDropSpread",
    "Correlation",
    "benjamini_hochberg",
    "class_drop_spread",
    "correlate",
    "correlation_ci",
    "correlation_table",
    "correlations_by_group",
    "kde",
    "mcnemar_exact",
    "pair_synergy",
    "sample_categories",
]
