"""The `lesion` command: thin wrappers that parse, call the library and print.

One module per group of commands; each registers its commands on `lesion.cli._app.app` when
imported below. A new command is a new module plus one import line here.
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from collections.abc import Sequence

import typer
from rich.text import Text
from typer.exceptions import TyperException

import lesion.cli._improve  # registers lesion improve
import lesion.cli._shapley  # noqa: F401  (registers lesion shapley)
from lesion._errors import LesionError
from lesion.cli import _data, _demo, _report, _reproduce, _run, _study, _train  # noqa: F401  (register the commands)
from lesion.cli._app import app, settings
from lesion.cli._common import err, tune_malloc


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    0: done. 2: a usage or input error, printed as one ``error:`` line (nothing was written).
    130: interrupted (finished work is kept). 1: an unexpected internal error, printed as one line
    (``lesion --debug ...`` or ``LESION_DEBUG=1`` shows its traceback).
    """
    settings["debug"] = bool(os.environ.get("LESION_DEBUG"))
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            result = app(args=list(argv) if argv is not None else None, prog_name="lesion", standalone_mode=False)
        except typer.Abort:
            err.print("interrupted: finished work is kept; rerun the same command to resume.", highlight=False)
            return 130
        except TyperException as exc:  # usage errors: click's message, exit 2
            exc.show()  # type: ignore[attr-defined]
            return int(getattr(exc, "exit_code", 2))
        except LesionError as exc:
            err.print(Text.assemble(("error:", "bold red"), " ", str(exc)), soft_wrap=True)
            return 2
        except Exception as exc:
            if settings["debug"]:
                traceback.print_exc()
            else:
                first = (str(exc).strip().splitlines() or [""])[0][:300]
                err.print(
                    Text.assemble(("error:", "bold red"), f" internal error ({type(exc).__name__}: {first}); "
                                  "rerun with --debug for the traceback"),
                    soft_wrap=True,
                )
            return 1
    return result if isinstance(result, int) else 0


def _show_warning(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
    """Warnings as one ``warning:`` line, without the source line that raised them."""
    err.print(Text.assemble(("warning:", "bold yellow"), " ", str(message)), soft_wrap=True)


def main() -> None:
    """Console entry point (see :func:`run` for the exit statuses)."""
    tune_malloc()
    sys.exit(run())


__all__ = ["app", "main", "run"]
