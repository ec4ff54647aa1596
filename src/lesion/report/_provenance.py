"""Where a run comes from: fingerprints, config, versions, precision checks, timings, completeness."""

from __future__ import annotations

import json
from typing import Any

from lesion.store import Run

#: Metadata keys shown in their own rows; any other key of the run is listed under "other metadata".
_KNOWN = {"format", "config", "model", "dataset", "versions", "created", "float32_check", "device", "timings"}


def provenance(run: Run, complete: dict[str, int]) -> dict[str, Any]:
    """The provenance rows of one run (for the template): label -> text, plus tables.

    Returns
    -------
    dict
        ``rows``: list of (label, value) strings; ``config``: pretty JSON text;
        ``float32``: list of (lesion, differ, n) rows or None; ``timings``: list of
        (stage, seconds) or None; ``complete``: bool.
    """
    model = run.meta("model") or {}
    dataset = run.meta("dataset") or {}
    config = run.config or {}
    versions = run.meta("versions") or {}
    done, total = complete["done"], complete["total"]
    rows = [
        ("model", f"{model.get('name', '?')} — sha256 {model.get('sha256', '?')}"),
        ("data", f"{dataset.get('name', '?')} — {dataset.get('n', '?')} samples, {dataset.get('n_classes', '?')} classes — sha256 {dataset.get('sha256', '?')}"),
        ("lesions", f"{done:,} of {total:,} finished" + ("" if done == total else " — INCOMPLETE: resume the sweep to finish it")),
        ("device", str(run.meta("device") or "not recorded by this run")),
        ("precision", f"{config['autocast']} autocast" if config.get("autocast") else "float32"),
        ("versions", ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) or "not recorded"),
        ("created", str(run.meta("created") or "not recorded")),
        ("format", str(run.meta("format"))),
    ]
    extra = sorted(set(_meta_keys(run)) - _KNOWN)
    rows += [(key, _short(run.meta(key))) for key in extra]
    check = run.float32_check()
    float32 = None if check is None else [(str(r.lesion), int(r.differ), int(r.n)) for r in check.itertuples()]
    timings = run.meta("timings")
    return {
        "rows": rows,
        "config": json.dumps(config, indent=2, sort_keys=True),
        "float32": float32,
        "timings": None if not timings else [(str(k), float(v)) for k, v in timings.items()],
        "complete": done == total,
    }


def _meta_keys(run: Run) -> list[str]:
    return [row[0] for row in run.db.con.execute("SELECT key FROM meta ORDER BY key")]


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 300 else text[:297] + "..."
