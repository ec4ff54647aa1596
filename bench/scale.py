"""A million lesions: the store's overhead over ``evaluate``, the engine against the arithmetic floor,
and the run directory's size, on the pairs (and singles) of ``fc1``/``fc2`` of the 2020 CNN
(Fashion-MNIST test images).

Prints and writes ``bench/RESULTS-SCALE.md``; the ratios are measured in one run (never as timed tests).
``python bench/scale.py --pairs 20000`` for a run of minutes (the totals are then projected per lesion,
and the report says so); ``python bench/scale.py --full`` runs exactly the target end to end: all
130,816 pairs of fc1 × 10,000 images through ``lesion.sweep``, reporting its wall time and run size.
The network is briefly trained (2 epochs on the first 16,000 Fashion-MNIST training images, SGD lr 0.01,
momentum 0.9, seed 0; cached under ``bench/out/scale/``) or ``--checkpoint``: the fast engine's
certified skipping depends on trained-like logit margins (a random network's logits nearly tie).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import lesion
from lesion.data import Dataset, Split, load_dataset
from lesion.engine import _fast
from lesion.models import load_checkpoint, load_model
from lesion.plans import Plan
from lesion.train import train_model

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def peak_gflops() -> float:
    """Best of three 4096² float32 matmuls (GFLOP/s)."""
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    a @ b
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * 4096**3 / best / 1e9


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


CACHE = Path(__file__).resolve().parent / "out" / "scale"
TRAIN = {"epochs": 2, "lr": 0.01, "momentum": 0.9, "batch_size": 64, "seed": 0}
TRAIN_IMAGES = 16_000


def trained_cnn(checkpoint: str | None) -> tuple[torch.nn.Module, str]:
    """The benchmarked network and a line saying which it is (trained here once, then cached)."""
    if checkpoint:
        return load_model("meyes2020-cnn", checkpoint), f"2020 CNN from `{checkpoint}`"
    path = CACHE / "meyes2020-cnn-fmnist16k-2ep.pt"
    if not path.is_file():
        data = load_dataset("fashion-mnist", SHARED)
        train = data.train if data.train is not None else data.test
        part = Dataset(data.name, data.test.head(1000), train.head(TRAIN_IMAGES))
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(train_model("meyes2020-cnn", part, **TRAIN), path)  # type: ignore[arg-type]
    history = load_checkpoint(path)["history"][-1]
    return load_model(checkpoint=path), (
        f"2020 CNN trained {TRAIN['epochs']} epochs on the first {TRAIN_IMAGES:,} Fashion-MNIST training images "
        f"(SGD lr {TRAIN['lr']}, momentum {TRAIN['momentum']}, seed {TRAIN['seed']}; test top-1 {history['test_acc']:.3f} "
        f"on 1,000 images; cached as `{path.relative_to(Path(__file__).resolve().parents[1])}`)"
    )


def layer_plan(model: torch.nn.Module, layer: str, kind: str, count: int = 0) -> Plan:
    """All singles or pairs of ``layer``, or ``count`` of them taken evenly through the plan (the first
    N pairs would all share the first few units, whose effects need not be typical)."""
    plan = lesion.pairs(model, layer) if kind == "pairs" else lesion.single(model, layer)
    if count <= 0 or count >= len(plan):
        return plan
    step = len(plan) / count
    return Plan(plan.name, [plan.lesions[int(i * step)] for i in range(count)], plan.info)


def floor_flops(model: torch.nn.Module, layer: str, width: int, n_lesions: int, n_images: int) -> float:
    """FLOPs a lesion of ``width`` units must redo: the next Linear's ``width`` columns, then every later
    Linear in full (ReLU not counted). fc1: fc2's columns + out; fc2: out's columns."""
    names = ["fc1", "fc2", "out"]
    following = [model.get_submodule(name) for name in names[names.index(layer) + 1 :]]
    macs = width * following[0].out_features + sum(m.in_features * m.out_features for m in following[1:])
    return 2.0 * macs * n_lesions * n_images


class Certified:
    """Counts the (lesion, sample) rows the fast engine certified (kept the intact outcome unevaluated)."""

    def __init__(self) -> None:
        self.certified = self.total = 0
        self.check = _fast.certify

    def __enter__(self) -> Certified:
        def counting(*args: Any) -> torch.Tensor:
            result = self.check(*args)
            self.certified += int(result.sum())
            self.total += result.numel()
            return result

        _fast.certify = counting
        return self

    def __exit__(self, *exc: object) -> None:
        _fast.certify = self.check

    @property
    def fraction(self) -> float:
        return self.certified / max(1, self.total)


def timed_evaluate(model: torch.nn.Module, split: Split, plan: Plan, certify: bool = True) -> tuple[float, float, float]:
    """Wall and CPU seconds of ``lesion.evaluate`` and the fraction of rows certified."""
    budget = _fast.CERTIFY_BYTES
    _fast.CERTIFY_BYTES = budget if certify else 0
    try:
        with Certified() as counted:
            start, cpu = time.perf_counter(), time.process_time()
            for _ in lesion.evaluate(model, split, plan.lesions, k=5):
                pass
            return time.perf_counter() - start, time.process_time() - cpu, counted.fraction
    finally:
        _fast.CERTIFY_BYTES = budget


def timed_sweep(model: torch.nn.Module, split: Split, plan: Plan, run_dir: Path) -> tuple[float, float, int, float]:
    """Wall and CPU seconds of ``lesion.sweep`` end to end, the run directory's bytes, rows certified."""
    with Certified() as counted:
        start, cpu = time.perf_counter(), time.process_time()
        lesion.sweep(model, split, plan, run_dir).close()
        wall, used = time.perf_counter() - start, time.process_time() - cpu
    size = dir_bytes(run_dir)
    return wall, used, size, counted.fraction


def header(peak: float, which: str) -> list[str]:
    return [
        "# A million lesions: store overhead, engine vs floor, run size",
        "",
        f"Command: `{' '.join(['python', *sys.argv])}`. Machine: {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average at start {os.getloadavg()[0]:.1f}; measured peak {peak:.0f} GFLOP/s. "
        f"{which}; Fashion-MNIST test images; k = 5.",
        "",
    ]


def full_section(model: torch.nn.Module, which: str, workdir: Path) -> list[str]:
    """All 130,816 pairs of fc1 × 10,000 images through ``lesion.sweep``: the targets, measured."""
    torch.manual_seed(0)
    peak = peak_gflops()
    split = load_dataset("fashion-mnist", SHARED).test.head(10_000)
    plan = layer_plan(model, "fc1", "pairs")
    wall, used, size, certified = timed_sweep(model, split, plan, workdir / "full")
    floor = floor_flops(model, "fc1", 2, len(plan), len(split)) / (peak * 1e9)
    lines = [
        *header(peak, which),
        f"Sweep: all {len(plan):,} pairs of fc1 × {len(split):,} images, `lesion.sweep` end to end.",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| wall time | **{wall / 60:.1f} min** ({len(plan) / wall:,.0f} lesions/s), {used / 60:.1f} min CPU | ≤ 15 min |",
        f"| run directory | **{size / 2**30:.2f} GiB** ({size / len(plan):,.0f} bytes per lesion) | ≤ 2 GB |",
        f"| engine + store vs the arithmetic floor ({floor:.0f} s at the measured peak) | {100 * floor / wall:.0f} % | |",
        f"| (lesion, sample) rows certified (intact outcome kept unevaluated) | {100 * certified:.1f} % | |",
        f"| peak RSS | {rss_gib():.2f} GiB | |",
        "",
    ]
    print("\n".join(lines), flush=True)
    return lines


def scale_section(model: torch.nn.Module, which: str, images: int, count: int, size_images: int, size_pairs: int, workdir: Path) -> list[str]:
    torch.manual_seed(0)
    peak = peak_gflops()
    test = load_dataset("fashion-mnist", SHARED).test
    split = test.head(images)
    plan = layer_plan(model, "fc1", "pairs", count)
    total = len(layer_plan(model, "fc1", "pairs"))
    n = len(plan)

    t_eval, c_eval, certified = timed_evaluate(model, split, plan)
    rss_eval = rss_gib()
    dense = layer_plan(model, "fc1", "pairs", min(n, 4000))
    t_dense, _, _ = timed_evaluate(model, split, dense, certify=False)

    run_dir = workdir / "pairs"
    t_sweep, c_sweep, size, _ = timed_sweep(model, split, plan, run_dir)
    rss_sweep = rss_gib()
    run = lesion.Run(run_dir)
    start = time.perf_counter()
    run.table("top1")
    t_table = time.perf_counter() - start
    run.close()
    shutil.rmtree(run_dir)

    singles = []
    for layer in ("fc1", "fc2"):
        single = layer_plan(model, layer, "singles")
        wall, _, fraction = timed_evaluate(model, split, single)
        floor = floor_flops(model, layer, 1, len(single), images) / (peak * 1e9)
        singles.append(f"| {layer} singles ({len(single)}) × {images:,} images: `evaluate` | {wall:.1f} s, {100 * floor / wall:.1f} % of the floor, "
                       f"{100 * fraction:.0f} % of rows certified | |")
    fc2 = layer_plan(model, "fc2", "pairs", count)
    wall, _, fraction = timed_evaluate(model, split, fc2)
    floor = floor_flops(model, "fc2", 2, len(fc2), images) / (peak * 1e9)
    singles.append(f"| fc2 pairs ({len(fc2):,}, evenly spaced) × {images:,} images: `evaluate` | {wall:.1f} s, {100 * floor / wall:.1f} % of the floor, "
                   f"{100 * fraction:.0f} % of rows certified | |")

    big_split = test.head(size_images)
    runs = []
    for pairs in (size_pairs // 4, size_pairs):
        big_plan = layer_plan(model, "fc1", "pairs", pairs)
        wall, used, big_size, big_certified = timed_sweep(model, big_split, big_plan, workdir / f"size{pairs}")
        shutil.rmtree(workdir / f"size{pairs}")
        runs.append((pairs, wall, used, big_size / pairs, big_certified))
    (n0, t0, u0, _, _), (n1, t1, u1, per_lesion_big, big_certified) = runs

    def projected(first: float, second: float) -> float:
        """Fixed cost + per-lesion cost × all pairs, from the two runs' times."""
        per_lesion = max((second - first) / (n1 - n0), 0.0)
        return max(first - per_lesion * n0, 0.0) + per_lesion * total

    overhead, cpu_overhead = t_sweep / t_eval - 1, c_sweep / c_eval - 1
    floor = floor_flops(model, "fc1", 2, n, images) / (peak * 1e9)
    floor_dense = floor_flops(model, "fc1", 2, len(dense), images) / (peak * 1e9)
    scope = "all" if n == total else f"{n:,} of the {total:,} (evenly spaced)"
    lines = [
        *header(peak, which),
        f"Sweep: {scope} pairs of fc1 ({n:,} lesions) × {images:,} images.",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| `lesion.evaluate` alone | {t_eval:.1f} s wall ({n / t_eval:,.0f} lesions/s), {c_eval:.1f} s CPU | |",
        f"| `lesion.sweep` end to end (stored) | {t_sweep:.1f} s wall ({n / t_sweep:,.0f} lesions/s), {c_sweep:.1f} s CPU | |",
        f"| store overhead over `evaluate`: wall / CPU time of this process | **{100 * overhead:.0f} %** / "
        f"**{100 * cpu_overhead:.0f} %** | ≤ 20 % |",
        f"| engine vs the arithmetic floor ({floor:.1f} s at the measured peak): wall / CPU time | **{100 * floor / t_eval:.1f} %** / "
        f"{100 * floor / c_eval:.1f} % | ≥ 25 % |",
        f"| (lesion, sample) rows certified (intact outcome kept unevaluated) | {100 * certified:.1f} % | |",
        f"| same engine without certificates ({len(dense):,} evenly spaced pairs) | {t_dense:.1f} s, {100 * floor_dense / t_dense:.1f} % of the floor | |",
        *singles,
        f"| run directory | {size / n:,.0f} bytes per lesion | |",
        f"| `Run.table('top1')` of the run | {t_table:.2f} s | |",
        f"| peak RSS after evaluate / after sweep | {rss_eval:.2f} / {rss_sweep:.2f} GiB | |",
        f"| {size_images:,} images: {n0:,} / {n1:,} pairs end to end | {t0:.1f} / {t1:.1f} s wall, {u0:.1f} / {u1:.1f} s CPU, "
        f"{per_lesion_big:,.0f} bytes per lesion, {100 * big_certified:.1f} % certified | |",
        f"| all {total:,} pairs × {size_images:,} images, projected (fixed cost + per-lesion cost from those two runs): "
        f"CPU time of this process (load-independent) / wall | **{projected(u0, u1) / 60:.1f} min** / {projected(t0, t1) / 60:.1f} min, "
        f"**{per_lesion_big * total / 2**30:.2f} GiB** | ≤ 15 min, ≤ 2 GB |",
        f"| same, from the {images:,}-image sweep's lesion·images per CPU second (no fixed costs) | "
        f"{c_sweep / (n * images) * total * size_images / 60:.1f} min | ≤ 15 min |",
        "",
        f"`python bench/scale.py --full` runs the last row for real (all {total:,} pairs × 10,000 images).",
        "",
    ]
    print("\n".join(lines), flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=1000, help="test images of the pair sweep")
    parser.add_argument("--pairs", type=int, default=0, help="N pairs of fc1, evenly spaced (0: all 130,816)")
    parser.add_argument("--size-images", type=int, default=10_000, help="images of the size/time projection runs")
    parser.add_argument("--size-pairs", type=int, default=2000, help="pairs of the larger size/time projection run (the other: a quarter)")
    parser.add_argument("--full", action="store_true", help="only: all 130,816 pairs × 10,000 images, end to end")
    parser.add_argument("--checkpoint", help="a trained 2020 CNN (default: train one briefly and cache it)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("RESULTS-SCALE.md")))
    args = parser.parse_args()
    model, which = trained_cnn(args.checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        if args.full:
            lines = full_section(model, which, Path(tmp))
        else:
            lines = scale_section(model, which, args.images, args.pairs, args.size_images, args.size_pairs, Path(tmp))
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
