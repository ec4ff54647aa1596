"""A million lesions: the store's overhead over ``evaluate``, the engine against the arithmetic floor,
and the run directory's size, on all 130,816 pairs of ``fc1`` of the 2020 CNN (Fashion-MNIST test images).

Prints and writes ``bench/RESULTS-SCALE.md``; the ratios are measured in one run (never as timed tests).
``python bench/scale.py`` (``make bench`` runs it); ``--pairs 5000`` for a shorter run (the totals are then
projected per lesion, and the report says so). The network is random-initialised (seeded): on a random
network few predictions change, so the stored outcomes are small; see the README for the worst case.
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

import torch

import lesion
from lesion.data import load_dataset
from lesion.models import build_model
from lesion.plans import Plan

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


def fc1_pairs(model: torch.nn.Module, count: int) -> Plan:
    plan = lesion.pairs(model, "fc1")
    return plan if count <= 0 else Plan(plan.name, plan.lesions[:count], plan.info)


def floor_flops(model: torch.nn.Module, n_lesions: int, n_images: int) -> float:
    """FLOPs that a pair of fc1 must redo: fc2's 2 columns, then the output layer (ReLU not counted)."""
    fc2, out = model.get_submodule("fc2"), model.get_submodule("out")
    macs = 2 * fc2.out_features + out.in_features * out.out_features
    return 2.0 * macs * n_lesions * n_images


def scale_section(images: int, count: int, size_images: int, size_pairs: int, workdir: Path) -> list[str]:
    torch.manual_seed(0)
    peak = peak_gflops()
    model = build_model("meyes2020-cnn").eval()
    test = load_dataset("fashion-mnist", SHARED).test
    split = test.head(images)
    plan = fc1_pairs(model, count)
    total = len(lesion.pairs(model, "fc1"))
    n = len(plan)

    start, cpu = time.perf_counter(), time.process_time()
    for _ in lesion.evaluate(model, split, plan.lesions, k=5):
        pass
    t_eval, c_eval = time.perf_counter() - start, time.process_time() - cpu
    rss_eval = rss_gib()

    run_dir = workdir / "pairs"
    start, cpu = time.perf_counter(), time.process_time()
    lesion.sweep(model, split, plan, run_dir).close()
    t_sweep, c_sweep = time.perf_counter() - start, time.process_time() - cpu
    rss_sweep = rss_gib()
    size = dir_bytes(run_dir)
    run = lesion.Run(run_dir)
    start = time.perf_counter()
    run.table("top1")
    t_table = time.perf_counter() - start
    run.close()
    shutil.rmtree(run_dir)

    big = workdir / "size"
    big_split = test.head(size_images)
    big_plan = fc1_pairs(model, size_pairs)
    start = time.perf_counter()
    lesion.sweep(model, big_split, big_plan, big).close()
    t_big = time.perf_counter() - start
    per_lesion_big = dir_bytes(big) / len(big_plan)
    shutil.rmtree(big)

    overhead, cpu_overhead = t_sweep / t_eval - 1, c_sweep / c_eval - 1
    floor = floor_flops(model, n, images) / (peak * 1e9)
    projected_big = t_big / len(big_plan) * total
    scope = "all" if n == total else f"the first {n:,} of the {total:,}"
    lines = [
        "# A million lesions: store overhead, engine vs floor, run size",
        "",
        f"Command: `{' '.join(['python', *sys.argv])}`. Machine: {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average at start {os.getloadavg()[0]:.1f}; measured peak {peak:.0f} GFLOP/s. "
        "2020 CNN, random-initialised (seeded); Fashion-MNIST test images; k = 5.",
        "",
        f"Sweep: {scope} pairs of fc1 ({n:,} lesions) × {images:,} images.",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| `lesion.evaluate` alone | {t_eval:.1f} s wall ({n / t_eval:,.0f} lesions/s), {c_eval:.1f} s CPU | |",
        f"| `lesion.sweep` end to end (stored) | {t_sweep:.1f} s wall ({n / t_sweep:,.0f} lesions/s), {c_sweep:.1f} s CPU | |",
        f"| store overhead over `evaluate`: wall / CPU time of this process | **{100 * overhead:.0f} %** / "
        f"**{100 * cpu_overhead:.0f} %** | ≤ 20 % |",
        f"| engine vs the arithmetic floor ({floor:.1f} s at the measured peak) | **{100 * floor / t_eval:.1f} %** | ≥ 25 % |",
        f"| run directory | {size / n:,.0f} bytes per lesion | |",
        f"| `Run.table('top1')` of the run | {t_table:.2f} s | |",
        f"| peak RSS after evaluate / after sweep | {rss_eval:.2f} / {rss_sweep:.2f} GiB | |",
        f"| {size_images:,} images: {len(big_plan):,} pairs end to end | {t_big:.1f} s, {per_lesion_big:,.0f} bytes per lesion | |",
        f"| all {total:,} pairs × {size_images:,} images (projected per lesion) | **{projected_big / 60:.1f} min**, "
        f"**{per_lesion_big * total / 2**30:.2f} GiB** | ≤ 15 min, ≤ 2 GB |",
        f"| same, projected from the {images:,}-image sweep's lesion·images/s (without the fixed costs) | "
        f"{t_sweep / (n * images) * total * size_images / 60:.1f} min | ≤ 15 min |",
        "",
    ]
    print("\n".join(lines), flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=1000, help="test images of the pair sweep")
    parser.add_argument("--pairs", type=int, default=0, help="first N pairs of fc1 (0: all 130,816)")
    parser.add_argument("--size-images", type=int, default=10_000, help="images of the size/time projection run")
    parser.add_argument("--size-pairs", type=int, default=2000, help="pairs of the size/time projection run")
    parser.add_argument("--out", default=str(Path(__file__).with_name("RESULTS-SCALE.md")))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lines = scale_section(args.images, args.pairs, args.size_images, args.size_pairs, Path(tmp))
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
