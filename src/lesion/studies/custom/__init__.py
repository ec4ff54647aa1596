"""A study of any model from a study file (``lesion run STUDY.toml``, `lesion.run_study`).

Not a paper, so not in the registry: its schema is `StudyFile` (``_config``), its stages
`run_study` (``_stages``), its figures and summary ``_report``, like every study package.
"""

from lesion.studies.custom._config import StudyFile, load_study_file
from lesion.studies.custom._stages import CustomStudyResult, run_study

__all__ = ["CustomStudyResult", "StudyFile", "load_study_file", "run_study"]
