"""`lesion reproduce NAME`: one command per study of the registry `lesion.studies.STUDIES`."""

from __future__ import annotations

from lesion.cli._app import reproduce_app
from lesion.cli._common import with_engine_options
from lesion.studies import STUDIES, study_command

for _name in STUDIES:
    reproduce_app.command(_name)(with_engine_options(study_command(_name).command))
