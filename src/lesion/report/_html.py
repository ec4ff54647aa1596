"""`write_report`: one self-contained HTML file for a run or a study directory.

The page is rendered by Jinja2 from ``templates/``; Apache ECharts (charts) and Tabulator
(tables) are inlined from ``vendor/``, the data as one JSON block, figures and thumbnails as
data URIs, so the file opens offline in any browser.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from lesion._errors import LesionError
from lesion._version import __version__
from lesion.report._data import ALPHA, Limits, run_payload
from lesion.report._provenance import provenance
from lesion.report._samples import draw_sprite, find_split
from lesion.report._search import improve_dirs, improve_payload, shapley_payload
from lesion.report._studydir import figures, is_study, study_info, study_runs, summary_html
from lesion.store import DB_NAME, Run

REPORT_NAME = "report.html"
_VENDOR_JS = ("echarts.min.js", "tabulator.min.js")
_VENDOR_CSS = ("tabulator.min.css",)


def write_report(
    path: str | Path,
    out: str | Path | None = None,
    *,
    data_dir: str | Path | None = None,
    limits: Limits | None = None,
) -> Path:
    """Write the HTML report of a run or study directory; returns the file written.

    Parameters
    ----------
    path : path
        A run directory (holding ``results.sqlite``; a `lesion shapley` run gets a Shapley view), a
        study directory (holding ``summary.md`` and ``figures/``, its runs in subdirectories), or a
        `lesion improve` folder (one network's ``validation/`` and ``test/``, or the OUT of several).
    out : path, optional
        The HTML file; default ``path/report.html``.
    data_dir : path, optional
        Where the runs' datasets are, for sample thumbnails (default ``$LESION_DATA_DIR``; the
        embedded digits need none). The reloaded samples must match the run's data fingerprint.
    limits : Limits, optional
        What a large run may put into the file (see `Limits`).

    Raises
    ------
    LesionError
        ``path`` is not a run or study, a run is empty or of another format, or ``data_dir``
        does not hold the run's data. Nothing is written then.

    Examples
    --------
    >>> write_report("runs/demo")                                 # doctest: +SKIP
    PosixPath('runs/demo/report.html')
    """
    source = Path(path)
    if not source.is_dir():
        raise LesionError(f"path: expected a run or study directory, got {str(source)!r}, which is not a directory")
    limits = limits or Limits()
    improves: list[Path] = []
    if (source / DB_NAME).is_file():
        runs, study = [source], None
        title = f"lesion report: run {source.name}"
    elif is_study(source):
        runs, study = study_runs(source), source
        limits = limits.scaled(len(runs))
        title = f"lesion report: study {source.resolve().name}"
    elif improves := improve_dirs(source):
        runs, study = study_runs(source), None
        limits = limits.scaled(len(runs))
        title = f"lesion report: improve {source.resolve().name}"
    else:
        raise LesionError(
            f"path: expected a run directory (holding {DB_NAME}), a study directory (holding summary.md and "
            f"figures/) or a `lesion improve` folder (holding validation/{DB_NAME}), got {str(source)!r}"
        )
    target = Path(out) if out is not None else source / REPORT_NAME
    if target.is_dir():
        raise LesionError(f"out: expected an HTML file path, got the directory {str(target)!r}")
    context = _context(source, runs, study, limits, data_dir, improves)
    context["title"] = title
    html = _render(context)
    _atomic_write(target, html)
    return target


def _context(
    source: Path, run_dirs: list[Path], study: Path | None, limits: Limits, data_dir: str | Path | None,
    improves: list[Path],
) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    payloads: list[dict[str, Any]] = []
    shapleys: list[dict[str, Any]] = []
    wanted: dict[str, tuple[dict[str, Any], set[int]]] = {}
    base = study if study is not None else source if improves else None
    for run_dir in run_dirs:
        label = str(run_dir.relative_to(base)) if base is not None else run_dir.name
        run = Run(run_dir)
        try:
            payload = run_payload(run, limits)
            prov = provenance(run, payload["complete"])
            dataset = run.meta("dataset") or {}
            model = run.meta("model") or {}
            if "shapley" in (run.config or {}):
                shapleys.append(shapley_payload(run, label, len(runs), study))
        finally:
            run.close()
        fingerprint = str(dataset.get("sha256"))
        wanted.setdefault(fingerprint, (dataset, set()))[1].update(payload.pop("thumbnail_requests"))
        payload["fingerprint"] = fingerprint
        payloads.append(payload)
        done, total = payload["complete"]["done"], payload["complete"]["total"]
        intact = payload["intact"]
        runs.append(
            {
                "label": label,
                "model": model.get("name", "?"),
                "data": dataset.get("name", "?"),
                "complete_text": f"{done:,} of {total:,}",
                "provenance": prov,
                "notes": payload["notes"],
                "k": payload["k"],
                "n": payload["n"],
                "intact_top1": intact["overall"]["top1"],
                "intact_topk": intact["overall"]["topk"],
                "intact_rows": list(zip(payload["classes"], intact["n"], intact["top1"], intact["topk"], strict=True)),
            }
        )
    sprites, sprite_data, notes = _sprites(wanted, data_dir)
    for payload, info in zip(payloads, runs, strict=True):
        payload["sprite"] = sprites.get(payload["fingerprint"])
        note = notes.get(payload["fingerprint"])
        payload["thumbnail_note"] = f"No thumbnails: {note}." if note else ""
        if note:
            info["notes"] = [*info["notes"], f"No sample thumbnails: {note}."]
    study_context = None
    if study is not None:
        figs = figures(study)
        study_context = {
            "path": str(source),
            "figures": [(stem, name, uri) for stem, (name, uri) in figs.items()],
            "summary": summary_html(study, figs),
            **study_info(study),
        }
    if study is not None:
        improves = sorted({d.parent for d in run_dirs if d.name == "validation" and "improve" in (_config(d) or {})})
    improve_views = [improve_payload(folder, str(folder.relative_to(base)) if base is not None and folder != base else folder.name, study)
                     for folder in improves]
    data = {"runs": payloads, "study": study is not None, "sprites": {s["id"]: s["payload"] for s in sprite_data},
            "shapley": shapleys, "improve": improve_views}
    shown = [v for v in improve_views if v["ok"]]
    population = None
    if len(shown) > 1:  # `lesion improve`'s OUT: how often the validation gains held, over every network
        population = {"networks": len(shown), "held": sum(v["held"][0] for v in shown), "gains": sum(v["held"][1] for v in shown)}
    return {"runs": runs, "study": study_context, "sprites": sprite_data, "data": data,
            "shapleys": shapleys, "improves": improve_views, "population": population}


def _config(run_dir: Path) -> dict[str, Any]:
    run = Run(run_dir)
    try:
        return dict(run.config or {})
    finally:
        run.close()


def _sprites(
    wanted: dict[str, tuple[dict[str, Any], set[int]]], data_dir: str | Path | None
) -> tuple[dict[str, str], list[dict[str, Any]], dict[str, str]]:
    """One sprite sheet per dataset fingerprint: (fingerprint -> sprite id, sprites, fingerprint -> why none)."""
    ids: dict[str, str] = {}
    sprites: list[dict[str, Any]] = []
    notes: dict[str, str] = {}
    for number, (fingerprint, (dataset, samples)) in enumerate(wanted.items()):
        if not samples:
            continue
        split, why = find_split(dataset, data_dir)
        sprite = None
        if split is not None:
            chosen = sorted(samples)
            sprite, why = draw_sprite(split, chosen)
        if sprite is None:
            if why:
                notes[fingerprint] = why
            continue
        sprite_id = f"s{number}"
        ids[fingerprint] = sprite_id
        labels = split.labels.numpy()
        payload = sprite.payload() | {"labels": {str(s): int(labels[s]) for s in sprite.index}}
        sprites.append({"id": sprite_id, "uri": sprite.data_uri(), "payload": payload})
    return ids, sprites, notes


def _resource(name: str) -> str:
    text = (resources.files("lesion.report") / name).read_text(encoding="utf-8")
    return re.sub(r"/[/*]# sourceMappingURL=\S+?(?: \*/)?\s*$", "", text, flags=re.MULTILINE)


def _render(context: dict[str, Any]) -> str:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("lesion.report", "templates"), autoescape=select_autoescape(["html", "j2"]), keep_trailing_newline=True
    )
    template = env.get_template("report.html.j2")
    data_json = json.dumps(context.pop("data"), separators=(",", ":"), allow_nan=False)
    # Inside <script>: "<" escaped so that no "</script>" or "<!--" can end the block early.
    data_json = data_json.replace("<", "\\u003c")
    from markupsafe import Markup

    return template.render(
        **context,
        version=__version__,
        alpha=ALPHA,
        vendor_js=Markup("\n".join(_resource(f"vendor/{name}") for name in _VENDOR_JS)),
        vendor_css=Markup("\n".join(_resource(f"vendor/{name}") for name in _VENDOR_CSS)),
        report_css=Markup(_resource("templates/report.css")),
        report_js=Markup(_resource("templates/report.js")),
        data_json=Markup(data_json),
    )


def _atomic_write(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` through a temporary file in the same directory (never half a file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # as an ordinary new file (mkstemp makes it private)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
