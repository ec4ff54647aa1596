"""`lesion report`: a run or study as one self-contained HTML file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lesion.cli._app import app
from lesion.cli._common import DataDirOpt, console


@app.command()
def report(
    path: Annotated[Path, typer.Argument(help="A run directory (results.sqlite), a study directory (summary.md, figures/) or a `lesion improve` folder.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="The HTML file (default: PATH/report.html).")] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Write one self-contained HTML report of a run or study: open it offline in any browser.

    Provenance, the intact network, a sortable and filterable table of every lesion, a lesions x
    classes heatmap, and one view per lesion (per-class bars, where the lost samples went, sample
    thumbnails, pair synergy); a `lesion shapley` run or `lesion improve` folder (or a study holding
    one) also gets its Shapley or improve view. Thumbnails need the run's samples: the embedded digits always; other
    datasets from --data-dir (or $LESION_DATA_DIR), checked against the run's data fingerprint.

    Example: lesion report runs/demo -o demo.html
    """
    from lesion.report import write_report

    written = write_report(path, out, data_dir=data_dir)
    console.print(f"wrote {written} ({written.stat().st_size / 1e6:.2f} MB)")
