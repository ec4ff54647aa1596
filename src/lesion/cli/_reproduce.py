"""`lesion reproduce NAME`: one command per study of the registry `lesion.studies.STUDIES`."""

from __future__ import annotations

import functools
from typing import Any

from lesion.cli._app import reproduce_app
from lesion.cli._common import console, with_engine_options
from lesion.studies import STUDIES, study_command


def with_report(command: Any) -> Any:
    """``command`` (which takes ``out``, a study directory) followed by that study's ``report.html``."""

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        result = command(**kwargs)
        from lesion.report import write_report

        console.print(f"wrote {write_report(kwargs['out'])}")
        return result

    return wrapper


for _name in STUDIES:
    reproduce_app.command(_name)(with_report(with_engine_options(study_command(_name).command)))
