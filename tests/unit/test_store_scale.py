"""The store at scale: batched commits, the compact outcome and metrics encoding, chunked reads."""

import json
import sqlite3

import numpy as np
import pandas as pd
import pytest
import torch

import lesion
from lesion import LesionError
from lesion.data import Split
from lesion.metrics import METRICS, class_metrics, class_sizes, correct_counts, metrics_from_counts
from lesion.store import Run
from lesion.testing import toy_data, toy_network


@pytest.mark.parametrize("n_classes", [3, 300])
def test_batched_counts_give_class_metrics_exactly(n_classes):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, n_classes, 257)
    labels[labels == 1] = 0  # class 1 has no samples: NaN accuracy, as class_metrics gives
    tops = rng.integers(0, n_classes, (6, 257, 2))
    intact = rng.integers(0, n_classes, (257, 2))
    counts = correct_counts(tops, labels, n_classes, intact)
    for i in range(len(tops)):
        expected = class_metrics(tops[i], labels, n_classes, intact)
        got = metrics_from_counts(counts[i], class_sizes(labels, n_classes))
        for name in METRICS:
            np.testing.assert_array_equal(got[name], expected[name])  # bit for bit, NaN in place


def _split(n_classes: int, n: int) -> tuple[torch.nn.Module, Split]:
    torch.manual_seed(0)
    model = torch.nn.Sequential()
    model.add_module("hidden", torch.nn.Linear(6, 8))
    model.add_module("relu", torch.nn.ReLU())
    model.add_module("out", torch.nn.Linear(8, n_classes))
    x = torch.randn(n, 6)
    labels = torch.arange(n) % n_classes
    return model, Split("random", x, labels, tuple(f"c{i}" for i in range(n_classes)))


@pytest.mark.parametrize(("n_classes", "n"), [(5, 61), (300, 13)])  # N not a multiple of 8; uint16 past 256 classes
def test_stored_outcomes_and_metrics_equal_the_engine_and_class_metrics(tmp_path, n_classes, n):
    model, split = _split(n_classes, n)
    plans = [lesion.single(model, "hidden"), lesion.pairs(model, "hidden")]
    run = lesion.sweep(model, split, plans, tmp_path, engine="reference", k=3)
    labels = split.labels.numpy()
    intact = next(iter(lesion.evaluate(model, split, [lesion.INTACT], k=3, engine="reference"))).topk
    np.testing.assert_array_equal(run.topk("intact"), intact)
    all_lesions = [*plans[0], *plans[1]]
    truth = {o.lesion.key: o for o in lesion.evaluate(model, split, all_lesions, k=3, engine="reference")}
    top1 = run.table("top1")
    lost = run.table("lost")
    assert list(top1.index) == ["intact", *[les.key for les in all_lesions]]
    for key, outcome in truth.items():
        np.testing.assert_array_equal(run.topk(key), outcome.topk)
        expected = class_metrics(outcome.topk, labels, n_classes, intact)
        np.testing.assert_array_equal(top1.loc[key].to_numpy(), expected["top1"])
        np.testing.assert_array_equal(lost.loc[key].to_numpy(), expected["lost"])
    near = run.lesions().set_index("key")["near_ties"]
    assert all(near[key] == o.near_ties for key, o in truth.items())


def test_chunked_reads_and_export_equal_the_whole_table(tmp_path):
    model, data = toy_network(), toy_data()
    run = lesion.sweep(model, data, [lesion.single(model, "hidden"), lesion.pairs(model, "hidden")], tmp_path / "run",
                       engine="reference")
    whole = run.metrics()
    pieces = list(run.iter_metrics(chunk=4))
    assert len(pieces) == 4 and [len(p) for p in pieces] == [4 * 25, 4 * 25, 4 * 25, 4 * 25]  # 16 lesions, 25 rows each
    pd.testing.assert_frame_equal(pd.concat(pieces, ignore_index=True), whole)
    # the hand-worked toy network: lesioning hidden:0 loses the 4 class-0 samples, nothing else
    lost = whole.query("lesion == 'hidden:0' and metric == 'lost'").set_index("class")["value"]
    assert lost.to_dict() == {-1: 4.0, 0: 4.0, 1: 0.0, 2: 0.0, 3: 0.0}
    assert whole.query("lesion == 'hidden:4' and metric == 'gained' and `class` == 2")["value"].item() == 2.0
    wide = whole[whole["metric"] == "topk"].pivot(index="lesion", columns="class_name", values="value")
    pd.testing.assert_frame_equal(run.table("topk").sort_index(), wide.loc[:, [*run.class_names, "all"]].sort_index(),
                                  check_names=False)
    run.export(tmp_path / "pq", "parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "pq" / "metrics.parquet"), whole)
    run.export(tmp_path / "csv", "csv")
    assert len(pd.read_csv(tmp_path / "csv" / "metrics.csv")) == len(whole)
    with pytest.raises(LesionError, match="metric must be one of"):
        run.table("top-1")


def test_a_run_of_the_old_format_is_refused_with_what_to_do(tmp_path):
    model, data = toy_network(), toy_data()
    lesion.sweep(model, data, lesion.single(model, "hidden"), tmp_path, engine="reference")
    con = sqlite3.connect(tmp_path / "results.sqlite")
    con.execute("UPDATE meta SET value = ? WHERE key = 'format'", (json.dumps("lesion-run/1"),))
    con.commit()
    con.close()
    with pytest.raises(LesionError, match=r"format 'lesion-run/1'.*rerun the sweep into a new --out"):
        Run(tmp_path)


def test_a_batch_with_an_unregistered_key_stores_nothing(tmp_path):
    model, data = toy_network(), toy_data()
    run = lesion.sweep(model, data, lesion.single(model, "hidden"), tmp_path, engine="reference")
    pending = lesion.pairs(model, "hidden").lesions[0]
    run.db.register("extra", [pending])
    before = len(run.metrics())
    tops = np.stack([run.topk("hidden:0")] * 2)
    counts = correct_counts(tops, data.labels.numpy(), 4)
    with pytest.raises(LesionError, match="1 of 2 keys are not registered"):
        run.db.put_outcomes([pending.key, "hidden:9"], tops, [0, 0], counts)
    assert len(run.metrics()) == before and not run.lesions().set_index("key").loc[pending.key, "done"]
