"""`lesion shapley` against msapy on the 2019 MLP's 20 fc1 units over the 10,000 MNIST test images.

msapy and ``lesion shapley --sampling plain/antithetic`` sample the same number of permutations;
``--sampling per-sample`` (one order per test image in each draw) a fifth as many draws, since each
draw's values vary far less. msapy (Keinan et al.'s multi-perturbation Shapley value analysis, the
public ``msapy`` package) calls an objective once per coalition — here a full forward pass of the
network with the coalition's units silenced, returning top-1 accuracy; ``lesion shapley`` evaluates the
chains of a chunk of orders together after ``fc1`` (per-class top-1 counts only). Reported: the times,
their ratio, the standard errors, the ratio of times to reach the same standard error (time scales
with the variance), and how many of the 20 values agree within two combined standard errors. The MLP is trained here for two
epochs (seed 0; about 20 s) so that the values are those of a working network.

Run with ``python bench/shapley.py`` (needs msapy: ``make bench`` installs it in bench/.venv), or as
the ``shapley`` section of ``bench/run.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lesion import Lesion, lesioned, shapley
from lesion.data import load_dataset
from lesion.models import load_model
from lesion.train import PRESETS, train_model

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def trained_mlp(data_dir: Path, epochs: int) -> torch.nn.Module:
    """The 2019 MLP trained for ``epochs`` on MNIST (seed 0), in eval mode."""
    preset = PRESETS["meyes2019-mlp"]
    dataset = load_dataset("mnist", data_dir)
    ckpt = train_model("meyes2019-mlp", dataset, seed=0, epochs=epochs, lr=preset["lr"], momentum=preset["momentum"],
                       batch_size=preset["batch_size"], eval_every_epoch=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mlp.pt"
        torch.save(ckpt, path)
        return load_model(None, path).eval()


def msapy_values(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, permutations: int, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """msapy's Shapley values of fc1's 20 units (top-1 accuracy), their standard errors and the objective calls."""
    from msapy import msa

    calls = 0

    def accuracy(lesioned_units: tuple[int, ...]) -> float:
        nonlocal calls
        calls += 1
        with torch.inference_mode():
            if lesioned_units:
                with lesioned(model, Lesion((("fc1", tuple(lesioned_units)),))):
                    logits = model(x)
            else:
                logits = model(x)
        return float((logits.argmax(1) == y).double().mean())

    table = msa.interface(n_permutations=permutations, elements=list(range(20)), objective_function=accuracy,
                          n_parallel_games=1, lazy=True, random_seed=seed, save_permutations=True, dual_progress_bars=False)
    samples = table.to_numpy(dtype=np.float64)
    return samples.mean(0), samples.std(0, ddof=1) / np.sqrt(len(samples)), calls


def shapley_section(permutations: int = 100, quick: bool = False, data_dir: Path = SHARED, epochs: int = 2) -> list[str]:
    """Time both and return the report's lines (Markdown)."""
    try:
        import msapy  # noqa: F401
    except ImportError:
        return ["## Shapley values: lesion shapley vs msapy", "", "msapy is not installed here (make bench installs it): skipped.", ""]
    model = trained_mlp(data_dir, 1 if quick else epochs)
    test = load_dataset("mnist", data_dir).test
    if quick:
        test = test.head(1000)
        permutations = min(permutations, 10)
    x, y = test.inputs.flatten(1), test.labels
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for sampling, draws in (("plain", permutations), ("antithetic", permutations), ("per-sample", max(2, permutations // 5))):
            label = f"lesion shapley --sampling {sampling} ({draws} {'draws' if sampling == 'per-sample' else 'permutations'})"
            start = time.perf_counter()
            result = shapley(model, test, "fc1", Path(tmp) / sampling, permutations=draws, seed=1, sampling=sampling)
            elapsed = time.perf_counter() - start
            table = result.table().set_index("player").loc[[f"fc1:{u}" for u in range(20)]]
            rows[label] = (elapsed, table["value"].to_numpy(), table["se"].to_numpy(), None)
    start = time.perf_counter()
    values, se, calls = msapy_values(model, x, y, permutations, seed=1)
    msapy_label = f"msapy (lazy, one process; {permutations} permutations)"
    rows[msapy_label] = (time.perf_counter() - start, values, se, calls)

    t_ref, v_ref, se_ref, _ = rows[msapy_label]
    lines = [
        "## Shapley values: lesion shapley vs msapy",
        "",
        f"Command: `{' '.join(['python', *sys.argv])}`. {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average at start {os.getloadavg()[0]:.1f} "
        "(a shared machine: times are noisy). The 2019 MLP trained for "
        f"{1 if quick else epochs} epochs (seed 0), its 20 `fc1` units, top-1 accuracy over {len(test):,} MNIST test images; "
        "permutations (or per-sample draws) as in the first column.",
        "",
        "| method | time (s) | mean SE (pp) | time ratio msapy / this | time ratio to reach msapy's SE | values within 2 combined SE of msapy's |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, (elapsed, v, s, _) in rows.items():
        ratio = t_ref / elapsed
        to_same_se = ratio * float(np.mean(se_ref**2) / np.mean(s**2))
        agree = int((np.abs(v - v_ref) <= 2 * np.sqrt(s**2 + se_ref**2)).sum())
        lines.append(f"| {label} | {elapsed:.1f} | {100 * s.mean():.3f} | {ratio:.1f}× | {to_same_se:.1f}× | {agree} / 20 |")
    per_sample = next(row for label, row in rows.items() if "per-sample" in label)
    close = {
        label: int((np.abs(v - per_sample[1]) <= 2 * np.sqrt(s**2 + per_sample[2] ** 2)).sum())
        for label, (_, v, s, _) in rows.items() if "per-sample" not in label
    }
    lines += [
        "",
        "Against the per-sample estimate (the smallest standard errors), values within 2 combined SE: "
        + ", ".join(f"{label.split(' (')[0]} {count} / 20" for label, count in close.items())
        + " (msapy's own sampling error is common to the last column's three comparisons).",
        "",
        f"msapy called its objective (one full forward pass over all images) {calls} times. The target (at least 50× less "
        "time than msapy to reach the same standard error) is met when the last-but-one column says ≥ 50×.",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--permutations", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="1,000 images, 10 permutations: a smoke run")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("RESULTS-SHAPLEY.md")))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lines = shapley_section(args.permutations, args.quick)
    print("\n".join(lines))
    Path(args.out).write_text("# Benchmark results: Shapley values\n\n" + "\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
