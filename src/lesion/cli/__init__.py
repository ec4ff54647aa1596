"""The `lesion` command: thin wrappers that parse, call the library and print.

One module per group of commands; each registers its commands on `lesion.cli._app.app` when
imported below. A new command is a new module plus one import line here.
"""

from __future__ import annotations

import sys

from lesion._errors import LesionError
from lesion.cli import _data, _demo, _reproduce, _run, _study, _train  # noqa: F401  (register the commands)
from lesion.cli._app import app
from lesion.cli._common import err, tune_malloc


def main() -> None:
    """Console entry point: library errors print one clear line and exit 2."""
    tune_malloc()
    try:
        app()
    except LesionError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)


__all__ = ["app", "main"]
