"""Plans: ordered, reproducible lists of lesions made by selectors."""

from lesion.plans._plan import Plan, of_lesions, pairs, single

__all__ = ["Plan", "of_lesions", "pairs", "single"]
