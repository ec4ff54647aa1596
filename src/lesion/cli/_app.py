"""The `lesion` Typer application and its command groups (commands register themselves on import)."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Lesion (ablation) studies of PyTorch networks: silence units, measure what the network can no longer do.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Datasets on disk: where they are looked up, and fetching them.", no_args_is_help=True)
app.add_typer(data_app, name="data")
reproduce_app = typer.Typer(
    help="Reproduce a paper's study in one command: train (or load), lesion, analyse, draw, summary.md.",
    no_args_is_help=True,
)
app.add_typer(reproduce_app, name="reproduce")

#: Process-wide CLI settings (set by the callback below).
settings = {"debug": False}


@app.callback()
def _global(
    debug: bool = typer.Option(False, "--debug", help="On an unexpected internal error, show the full traceback."),
) -> None:
    settings["debug"] = debug
