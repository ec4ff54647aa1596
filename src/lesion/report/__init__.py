"""Reports of runs and studies: Markdown helpers and a run's headline numbers."""

from lesion.report._markdown import bullet_list, markdown_table, timings_table
from lesion.report._summary import RunSummary, run_summary

__all__ = ["RunSummary", "bullet_list", "markdown_table", "run_summary", "timings_table"]
