"""Reports of runs and studies: the self-contained HTML report."""

from lesion.report._data import Limits
from lesion.report._html import write_report

__all__ = ["Limits", "write_report"]
