"""The HTML report's data, files and errors (the page itself is tested in tests/browser/)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from lesion import Lesion, sweep
from lesion._errors import LesionError
from lesion.data import load_dataset
from lesion.models import load_model
from lesion.plans import pairs, single
from lesion.report import Limits, write_report
from lesion.report._data import run_payload
from lesion.report._samples import draw_sprite, find_split
from lesion.store import Run
from lesion.train import train_model


def make_run(out: Path) -> Path:
    """A small real run: the 64-20-10-10 MLP trained 3 epochs on digits; every unit alone, pairs of fc1:0-5."""
    data = load_dataset("digits")
    checkpoint = train_model(
        "meyes2019-mlp", data, seed=0, epochs=3, lr=0.05, momentum=0.9, batch_size=32, model_kwargs={"in_features": 64}
    )
    model = load_model("meyes2019-mlp", in_features=64)
    model.load_state_dict(checkpoint["trained"])
    sweep(model, data.test, [single(model, "fc1;fc2"), pairs(model, "fc1:0-5")], out, model_name="meyes2019-mlp").close()
    return out


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return make_run(tmp_path_factory.mktemp("report") / "run")


def _data_block(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="lesion-data">(.*?)</script>', html, re.S)
    assert match is not None
    return json.loads(match.group(1))


def test_payload_numbers_match_the_outcomes(small_run: Path) -> None:
    run = Run(small_run)
    payload = run_payload(run)
    labels = run.labels
    before, _ = run.correct("intact")
    keys = payload["lesions"]["key"]
    assert len(keys) == 20 + 10 + 15 and payload["complete"] == {"done": 45, "total": 45}
    p_all = []
    for i, key in enumerate(keys):
        after, _ = run.correct(key)
        lost, gained = before & ~after, ~before & after
        assert payload["lesions"]["lost"][i] == lost.sum() and payload["lesions"]["gained"][i] == gained.sum()
        assert payload["bars"]["lost"][i] == np.bincount(labels[lost], minlength=10).tolist()
        assert payload["bars"]["gained"][i] == np.bincount(labels[gained], minlength=10).tolist()
        assert payload["lesions"]["d1"][i] == pytest.approx(100 * (after.mean() - before.mean()), abs=1e-3)
        for c in range(10):
            in_c = labels == c
            change = 100 * (after[in_c].mean() - before[in_c].mean())
            assert payload["lesions"]["cls"][i][c] == pytest.approx(change, abs=1e-3)
        b, g = int(lost.sum()), int(gained.sum())
        expected_p = 1.0 if b + g == 0 else stats.binomtest(min(b, g), b + g, 0.5).pvalue
        assert payload["lesions"]["p"][i] == pytest.approx(expected_p, rel=5e-3)
        p_all.append(expected_p)
        # where the lost samples went: (true class, new top-1) counts
        top1 = run.topk(key)[:, 0]
        lost_to = payload["detail"][key]["lost_to"]
        triples = {(lost_to[j], lost_to[j + 1]): lost_to[j + 2] for j in range(0, len(lost_to), 3)}
        expected = {}
        for s in np.flatnonzero(lost):
            expected[(int(labels[s]), int(top1[s]))] = expected.get((int(labels[s]), int(top1[s])), 0) + 1
        assert triples == expected and payload["detail"][key]["lost_cells"] == len(expected)
        thumbs = payload["detail"][key]["thumbs"]
        assert set(thumbs["lost"]) <= set(np.flatnonzero(lost)) and len(thumbs["lost"]) == min(24, b)
        assert set(thumbs["gained"]) <= set(np.flatnonzero(gained))
    # the overall tests' q-values are a subset of one BH family over lesions x (classes + overall): never below p
    q = np.array(payload["lesions"]["q"], dtype=float)
    assert np.all(q >= np.array(payload["lesions"]["p"]))
    assert payload["intact"]["overall"]["top1"] == pytest.approx(100 * before.mean(), abs=1e-3)
    groups = payload["groups"]
    assert list(zip(groups["plan"], groups["layers"], groups["n"], strict=True)) == [("single", "fc1", 20), ("single", "fc2", 10), ("pairs", "fc1", 15)]
    fc2 = [i for i, key in enumerate(keys) if key.startswith("fc2")]
    d1 = np.array(payload["lesions"]["d1"])
    assert groups["worst"][1] == pytest.approx(d1[fc2].min(), abs=1e-3) and groups["mean"][1] == pytest.approx(d1[fc2].mean(), abs=1e-3)
    assert groups["sig"][1] == sum(payload["lesions"]["sig"][i] for i in fc2)
    run.close()


def test_pair_synergy_is_pair_minus_both_singles(small_run: Path) -> None:
    run = Run(small_run)
    payload = run_payload(run)
    table = run.table("top1")
    keys = payload["lesions"]["key"]
    pairs_ = payload["pairs"]
    assert len(pairs_["pair"]) == 15
    for j, i in enumerate(pairs_["pair"]):
        a, b = keys[pairs_["a"][j]], keys[pairs_["b"][j]]
        change = (table - table.loc["intact"]) * 100
        units = sorted(u for _, us in (*Lesion.from_key(a).units, *Lesion.from_key(b).units) for u in us)
        assert Lesion.from_key(keys[i]).units == (("fc1", tuple(units)),)
        expected = change.loc[keys[i], "all"] - change.loc[a, "all"] - change.loc[b, "all"]
        assert pairs_["syn"][j] == pytest.approx(expected, abs=2e-3)
    run.close()


def test_report_file_is_self_contained(small_run: Path, tmp_path: Path) -> None:
    out = write_report(small_run, tmp_path / "r.html")
    html = out.read_text(encoding="utf-8")
    assert out.stat().st_size < 5_000_000
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=|sourceMappingURL", html)
    assert "echarts" in html and "Tabulator" in html
    data = _data_block(html)
    assert data["runs"][0]["lesions"]["key"][0].startswith("fc")
    sprite = data["runs"][0]["sprite"]
    assert sprite is not None and "data:image/png;base64," in html  # digits are embedded: thumbnails always
    run = Run(small_run)
    labels = run.labels
    for sample, label in data["sprites"][sprite]["labels"].items():
        assert labels[int(sample)] == label
    run.close()
    assert not list(tmp_path.glob(".*.tmp"))


def test_limits_aggregate_a_large_run(small_run: Path) -> None:
    run = Run(small_run)
    payload = run_payload(run, Limits(table_rows=12, heatmap_rows=5, detail=3, thumbnails=2, sprite=4))
    run.close()
    d1 = np.array(payload["lesions"]["d1"])
    assert len(d1) == 12 and len(payload["heatmap"]) == 5 and len(payload["detail"]) == 3
    complete = run_payload(Run(small_run))
    full_detail = complete["detail"]
    everything = np.array(complete["lesions"]["d1"])
    assert np.sort(np.abs(d1))[0] >= np.sort(np.abs(everything))[-12] - 1e-9  # the largest changes are kept
    assert len(payload["thumbnail_requests"]) <= 4
    assert all(len(d["thumbs"]["lost"]) <= 2 for d in payload["detail"].values())
    assert len(payload["notes"]) == 3
    assert sum(payload["groups"]["n"]) == 45  # the aggregate still covers every lesion
    few_cells = run_payload(Run(small_run), Limits(confusion_cells=2))["detail"]
    for key, d in few_cells.items():
        full = full_detail[key]["lost_to"]
        largest = sorted(full[j + 2] for j in range(0, len(full), 3))[::-1][:2]
        assert sorted(d["lost_to"][2::3])[::-1] == largest and d["lost_cells"] == len(full) // 3
    many_classes = Limits(table_bytes=7 * (60 + 28 * 10), heatmap_cells=40)  # bounded by bytes and cells, not rows
    assert many_classes.rows(10) == (7, 4)
    payload = run_payload(Run(small_run), many_classes)
    assert len(payload["lesions"]["key"]) == 7 and len(payload["heatmap"]) == 4


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("report.html", "*.tmp"))
    return dst


def test_bad_input_is_refused_and_nothing_written(small_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    with pytest.raises(LesionError, match="not a directory"):
        write_report(tmp_path / "missing", out)
    (tmp_path / "plain").mkdir()
    with pytest.raises(LesionError, match=r"run directory .* a study directory .* or a `lesion improve` folder"):
        write_report(tmp_path / "plain", out)
    old = _copy_run(small_run, tmp_path / "old")
    with sqlite3.connect(old / "results.sqlite") as con:
        con.execute("UPDATE meta SET value = ? WHERE key = 'format'", (json.dumps("lesion-run/0"),))
    with pytest.raises(LesionError, match="format 'lesion-run/0'"):
        write_report(old, out)
    empty = _copy_run(small_run, tmp_path / "empty")
    with sqlite3.connect(empty / "results.sqlite") as con:  # as if killed before its first lesion
        con.execute("DELETE FROM metrics WHERE lesion_id IN (SELECT id FROM lesions WHERE key != 'intact')")
        con.execute("DELETE FROM outcomes WHERE lesion_id IN (SELECT id FROM lesions WHERE key != 'intact')")
    with pytest.raises(LesionError, match="no finished lesion"):
        write_report(empty, out)
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))
    assert not (empty / "report.html").exists() and not (old / "report.html").exists()


def test_study_directory(small_run: Path, tmp_path: Path) -> None:
    study = tmp_path / "study"
    (study / "figures").mkdir(parents=True)
    _copy_run(small_run, study / "networks" / "seed-000")
    _copy_run(small_run, study / "networks" / "seed-001")
    svg = '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect id="a" width="10" height="10" fill="url(#a)"/></svg>'
    (study / "figures" / "fig1.svg").write_text(svg)
    (study / "figures" / "fig1.png").write_bytes(b"\x89PNG not used")
    (study / "summary.md").write_text(
        "# Study\n\n| quantity | paper | ours |\n|---|---|---|\n| drop | 1.0 | 2.0 |\n\n"
        "![first](figures/fig1.png)\n\n<script>alert(1)</script>\n"
    )
    (study / "timings.json").write_text(json.dumps({"train": 1.5, "sweep": 2.0}))
    html = write_report(study).read_text(encoding="utf-8")
    data = _data_block(html)
    assert len(data["runs"]) == 2 and data["study"] is True
    assert "<table>" in html and "<td>2.0</td>" in html  # summary.md's table rendered
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # raw HTML in markdown is escaped
    svg_uri = "data:image/svg+xml;charset=utf-8,&lt;svg xmlns="
    assert html.count(svg_uri) == 2  # the figure, and summary.md's image pointing at it (SVG preferred)
    assert "url(%23a)" in html  # '#' encoded inside the data URI
    assert 'href="#run/1"' in html and "networks/seed-001" in html
    assert ">3.5<" in html  # the stage timings' total
    assert data["runs"][0]["sprite"] == data["runs"][1]["sprite"]  # one sprite per dataset


def test_thumbnails_need_matching_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LESION_DATA_DIR", raising=False)
    wanted = {"name": "fashion-mnist/test[:100]", "sha256": "0" * 64}
    split, why = find_split(wanted, None)
    assert split is None and "--data-dir" in why
    split, why = find_split({"name": "digits/test[7]", "sha256": "0"}, None)
    assert split is None and "cannot be reloaded" in why
    digits = load_dataset("digits").test
    split, why = find_split({"name": "digits/test", "sha256": digits.fingerprint()}, None)
    assert why is None and split.fingerprint() == digits.fingerprint()
    with pytest.raises(LesionError, match="--data-dir: cannot load fashion-mnist"):
        find_split(wanted, tmp_path)


def test_sprite_cells_are_the_samples() -> None:
    split = load_dataset("digits").test
    samples = [3, 17, 200]
    sprite, why = draw_sprite(split, samples)
    assert why is None and sprite is not None and sprite.cell == (8, 8)
    sheet = np.asarray(Image.open(io.BytesIO(sprite.png)))
    x = split.inputs[samples].numpy().reshape(3, 8, 8)
    scaled = np.round(255 * (x - x.min()) / (x.max() - x.min()))
    for s, expected in zip(samples, scaled, strict=True):
        pos = sprite.index[s]
        cell = sheet[(pos // sprite.columns) * 8 : (pos // sprite.columns + 1) * 8, (pos % sprite.columns) * 8 :][:, :8]
        assert np.array_equal(cell, expected)


@pytest.mark.integration
def test_thumbnails_verify_the_fingerprint_of_real_data(monkeypatch: pytest.MonkeyPatch) -> None:
    roots = [Path(p) for p in [os.environ.get("LESION_DATA_DIR")] if p] + [Path(__file__).resolve().parents[3] / "shared" / "datasets"]
    root = next((r for r in roots if (r / "fashion-mnist" / "t10k-images-idx3-ubyte.gz").is_file()), None)
    if root is None:
        pytest.skip(f"fashion-mnist test files not found under {[str(r) for r in roots]} (set LESION_DATA_DIR)")
    split = load_dataset("fashion-mnist", root, normalize="half").test.head(100)
    meta = {"name": split.name, "sha256": split.fingerprint()}
    found, why = find_split(meta, root)
    assert why is None and found.fingerprint() == meta["sha256"] and len(found) == 100
    with pytest.raises(LesionError, match="does not match the run's data fingerprint"):
        find_split({**meta, "sha256": "0" * 64}, root)
    monkeypatch.setenv("LESION_DATA_DIR", str(root))  # found through the environment: a note, not an error
    found, why = find_split({**meta, "sha256": "0" * 64}, None)
    assert found is None and "does not match" in why


def test_cli_report(small_run: Path, tmp_path: Path) -> None:
    env_py = [sys.executable, "-m", "lesion"]
    ok = subprocess.run([*env_py, "report", str(small_run), "-o", str(tmp_path / "x.html")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "wrote" in ok.stdout and (tmp_path / "x.html").is_file()
    bad = subprocess.run([*env_py, "report", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2 and "run directory" in bad.stderr
    assert not (tmp_path / "report.html").exists()


def test_provenance_of_an_incomplete_bf16_run(tmp_path: Path) -> None:
    data = load_dataset("digits")
    model = load_model("meyes2019-mlp", in_features=64)
    out = tmp_path / "bf16"
    sweep(model, data.test.head(100), [single(model, "fc2")], out, autocast="bf16", float32_check=2).close()
    with sqlite3.connect(out / "results.sqlite") as con:  # as if killed after 7 of its 10 lesions
        con.execute("DELETE FROM metrics WHERE lesion_id IN (SELECT id FROM lesions WHERE key IN ('fc2:7', 'fc2:8', 'fc2:9'))")
        con.execute("DELETE FROM outcomes WHERE lesion_id IN (SELECT id FROM lesions WHERE key IN ('fc2:7', 'fc2:8', 'fc2:9'))")
    html = write_report(out).read_text(encoding="utf-8")
    assert "bf16 autocast" in html and "7 of 10 finished — INCOMPLETE" in html and "incomplete</span>" in html
    run = Run(out)
    check = run.float32_check()
    assert check is not None and len(check) == 3  # the intact network and two lesions
    for row in check.itertuples():
        assert f"<td>{row.lesion}</td><td class=\"num\">{row.differ} of {row.n}</td>" in html
    assert len(_data_block(html)["runs"][0]["lesions"]["key"]) == 7
    run.close()
