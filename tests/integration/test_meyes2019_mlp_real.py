"""The 2019 MLP study on the real MNIST: a 2-network, 1-epoch run evaluated on 1000 test digits."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest

from lesion.studies.meyes2019_mlp._stages import run_meyes2019_mlp

matplotlib.use("Agg")

MNIST_FILES = (
    "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
)


def mnist_dir() -> Path:
    """The directory holding mnist/, or skip saying where it looked."""
    roots = [Path(p) for p in [os.environ.get("LESION_DATA_DIR")] if p]
    roots.append(Path(__file__).resolve().parents[3] / "shared" / "datasets")
    for root in roots:
        if all((root / "mnist" / f).is_file() for f in MNIST_FILES):
            return root
    pytest.skip(f"real MNIST files not found under {[str(r) for r in roots]} (set LESION_DATA_DIR)")


@pytest.mark.slow
@pytest.mark.integration
def test_two_networks_one_epoch_on_mnist(tmp_path):
    out = tmp_path / "study"
    result = run_meyes2019_mlp(out, data="mnist", data_dir=mnist_dir(), networks=2, epochs=1, limit=1000)
    assert result.networks == (0, 1)
    # one epoch of SGD already classifies most digits; the paper's network reaches 94.6 % after 100
    intact = result.effects.query("`class` == -1").groupby("network")["intact_top1"].first()
    assert (intact > 0.85).all()
    assert len(result.effects) == 2 * (30 + 190) * 11
    assert result.effects["lesion"].str.startswith("fc1:").sum() > 0
    # the Mann-Whitney test compares each fc1 unit's 784 incoming weights with its initial snapshot
    mw = result.attributes.query("attribute == 'mw_p' and layer == 'fc1'")
    assert len(mw) == 40 and (mw["reference"] == "initial snapshot").all()
    assert all(path.is_file() for paths in result.figures.values() for path in paths)
    assert len(result.figures) == 17
    weight_maps = result.figures["fig08-weight-maps"][0]
    assert weight_maps.stat().st_size > 10_000
    assert "| Test accuracy of the trained MLP (top-1) | 94.6 % |" in result.summary_path.read_text()
    # resuming reuses the trained networks, finished sweeps and caches
    kept = [*result.checkpoints, *(run / "attributes.csv" for run in result.runs)]
    written = {path: path.stat().st_mtime_ns for path in kept}
    again = run_meyes2019_mlp(out, data="mnist", data_dir=mnist_dir(), networks=2, epochs=1, limit=1000)
    assert again.summary.equals(result.summary)
    assert {path: path.stat().st_mtime_ns for path in kept} == written
    assert again.timings["unit attributes"] == result.timings["unit attributes"]  # read from its cache
