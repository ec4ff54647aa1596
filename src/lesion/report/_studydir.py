"""A study directory as the report sees it: ``summary.md``, ``figures/`` and run subdirectories.

Generic on that layout: any directory holding ``summary.md`` and ``figures/`` is a study; its runs
are the subdirectories (at any depth) holding a ``results.sqlite``. Figures are embedded as
data URIs (SVG where the study wrote one and it is not huge, PNG otherwise), so that the SVGs'
internal ids never clash with each other or with the page.
"""

from __future__ import annotations

import base64
import json
import re
from html import escape
from pathlib import Path
from typing import Any

from lesion.store import DB_NAME

SUMMARY = "summary.md"
FIGURES = "figures"
#: SVGs larger than this are replaced by their PNG sibling when there is one.
SVG_LIMIT = 1_000_000
_MIME = {".svg": "image/svg+xml", ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def is_study(path: Path) -> bool:
    return (path / SUMMARY).is_file() and (path / FIGURES).is_dir()


def study_runs(path: Path) -> list[Path]:
    """The run directories inside a study, sorted by path."""
    return sorted(p.parent for p in path.rglob(DB_NAME) if p.is_file())


def figures(path: Path) -> dict[str, tuple[str, str]]:
    """Figure name (file stem) -> (file name used, data URI), in name order."""
    chosen: dict[str, Path] = {}
    for file in sorted((path / FIGURES).iterdir()):
        if file.suffix.lower() not in _MIME:
            continue
        current = chosen.get(file.stem)
        if current is None or _better(file, current):
            chosen[file.stem] = file
    return {stem: (file.name, _data_uri(file)) for stem, file in sorted(chosen.items())}


def _better(file: Path, current: Path) -> bool:
    """SVG beats a raster unless it is over `SVG_LIMIT`; between rasters, PNG."""
    if file.suffix.lower() == ".svg":
        return file.stat().st_size <= SVG_LIMIT
    if current.suffix.lower() == ".svg":
        return current.stat().st_size > SVG_LIMIT
    return file.suffix.lower() == ".png"


def _data_uri(file: Path) -> str:
    """SVG as UTF-8 text (only ``%``, ``#`` and line breaks encoded: far smaller than base64), rasters as base64."""
    if file.suffix.lower() == ".svg":
        text = file.read_text(encoding="utf-8")
        for raw, coded in (("%", "%25"), ("#", "%23"), ("\r", " "), ("\n", " ")):
            text = text.replace(raw, coded)
        return "data:image/svg+xml;charset=utf-8," + text
    return f"data:{_MIME[file.suffix.lower()]};base64," + base64.b64encode(file.read_bytes()).decode("ascii")


def summary_html(path: Path, figure_uris: dict[str, tuple[str, str]]) -> str:
    """``summary.md`` rendered by markdown-it-py (CommonMark + tables, raw HTML escaped).

    Images pointing at the study's own figures are replaced by the embedded figures, so the page
    needs no file beside it.
    """
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    html = md.render((path / SUMMARY).read_text(encoding="utf-8"))
    by_file = {Path(name).stem: uri for name, uri in figure_uris.values()}

    def embed(match: re.Match[str]) -> str:
        target = Path(match.group(2))
        uri = by_file.get(target.stem) if target.parent.name == FIGURES else None
        return f"{match.group(1)}{escape(uri)}{match.group(3)}" if uri else match.group(0)

    return re.sub(r'(<img src=")([^"]+)(")', embed, html)


def study_info(path: Path) -> dict[str, Any]:
    """The study's own records: ``study.json`` (settings) and ``timings.json`` (stage -> seconds), where present."""
    info: dict[str, Any] = {"settings": None, "timings": None}
    for key, name in (("settings", "study.json"), ("timings", "timings.json")):
        file = path / name
        if file.is_file():
            try:
                info[key] = json.loads(file.read_text())
            except json.JSONDecodeError:
                info[key] = None
    if isinstance(info["timings"], dict):
        info["timings"] = [(str(k), float(v)) for k, v in info["timings"].items() if isinstance(v, (int, float))]
    if info["settings"] is not None:
        info["settings"] = json.dumps(info["settings"], indent=2, sort_keys=True)
    return info
