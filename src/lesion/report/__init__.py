"""Reports of runs and studies: Markdown helpers, a run's headline numbers, the self-contained HTML report."""

from lesion.report._data import Limits
from lesion.report._html import write_report
from lesion.report._markdown import bullet_list, figures_and_timings, markdown_table, timings_table
from lesion.report._summary import RunSummary, run_summary

__all__ = ["Limits", "RunSummary", "bullet_list", "figures_and_timings", "markdown_table", "run_summary", "timings_table", "write_report"]
