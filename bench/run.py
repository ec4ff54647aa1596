"""Lesion sweeps side by side: the fast engine, the reference path and Captum's LayerFeatureAblation.

Writes ``bench/RESULTS.md`` (CPU, float32) and, where CUDA is available, ``bench/RESULTS-GPU.md``
(the small VGG and VGG-19-BN at 224 px, float32 and bf16). Networks are random-initialised
(seeded): timing and agreement do not depend on training. Run ``python bench/run.py`` (``make
bench``); ``--quick`` for a smoke run; ``--sections gpu --gpu-device cpu --quick`` runs the GPU
section's code on the CPU at toy sizes.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import nn

from lesion import Lesion, evaluate
from lesion.data import Split
from lesion.engine._estimate import estimate
from lesion.models import meyes2019_mlp, meyes2020_cnn
from lesion.models._vgg import vgg, vgg_conv_layers
from lesion.plans import pairs, single

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
LESIONABLE = (nn.Linear, nn.Conv2d)


def load_test(name: str, pad: int = 0) -> Split:
    """The 10,000 test images of ``name`` in [0, 1], (N, 1, 28 + 2 pad, 28 + 2 pad)."""
    try:
        from lesion.data import load_dataset

        split = load_dataset(name, SHARED).test
        x = split.inputs.float().reshape(len(split), 1, 28, 28)
        y = split.labels
    except Exception:  # the IDX loader is not there yet: read the gz files directly
        root = SHARED / name
        with gzip.open(root / "t10k-images-idx3-ubyte.gz") as f:
            x = torch.from_numpy(np.frombuffer(f.read(), np.uint8, offset=16).copy()).float().div(255).view(-1, 1, 28, 28)
        with gzip.open(root / "t10k-labels-idx1-ubyte.gz") as f:
            y = torch.from_numpy(np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64))
    if pad:
        x = F.pad(x, (pad,) * 4)
    return Split(f"{name}/test", x.contiguous(), y, tuple(str(i) for i in range(10)))


def peak_gflops() -> float:
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    a @ b
    best = min(_timed(lambda: a @ b)[0] for _ in range(3))
    return 2 * 4096**3 / best / 1e9


def peak_bf16_tflops(device: torch.device) -> float:
    """Best of 5 timed 8192² bf16 matmuls on ``device`` (TFLOP/s)."""
    n = 8192
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    a @ b
    times = [_timed(lambda: a @ b, device)[0] for _ in range(5)]
    return 2 * n**3 / min(times) / 1e12


def _timed(fn, device: torch.device | None = None):  # type: ignore[no-untyped-def]
    _sync(device)
    start = time.perf_counter()
    result = fn()
    _sync(device)
    return time.perf_counter() - start, result


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- FLOP lower bound: multiply-adds that must be redone after the lesioned layer ----------------


def layer_macs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, int, int]]:
    """(name, multiply-adds per sample, units) of each Linear/Conv2d in forward order (chain networks)."""
    found: list[tuple[str, int, int]] = []
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, LESIONABLE):

            def hook(m, i, o, name=name):  # type: ignore[no-untyped-def]
                per_out = m.in_features if isinstance(m, nn.Linear) else m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                units = m.out_features if isinstance(m, nn.Linear) else m.out_channels
                found.append((name, o[0].numel() * per_out, units))

            hooks.append(m.register_forward_hook(hook))
    with torch.inference_mode():
        model.eval()(example[:1])
    for h in hooks:
        h.remove()
    return found


def lower_bound_macs(macs: list[tuple[str, int, int]], lesions: list[Lesion]) -> int:
    """Per sample, summed over lesions: the next layer's share for the lesioned units, then all later layers."""
    index = {name: i for i, (name, _, _) in enumerate(macs)}
    total = 0
    for lesion in lesions:
        (layer, units), = lesion.units
        i = index[layer]
        if i + 1 < len(macs):
            total += macs[i + 1][1] * len(units) // macs[i][2] + sum(m for _, m, _ in macs[i + 2 :])
    return total


# ---- the three methods -----------------------------------------------------------------------------


def run_engine(model, split, lesions, batch_size=256, **options):  # type: ignore[no-untyped-def]
    return _timed(lambda: {o.lesion.key: o for o in evaluate(model, split, lesions, k=1, engine="fast", batch_size=batch_size, **options)})


def run_reference(model, split, lesions, batch_size=256):  # type: ignore[no-untyped-def]
    return _timed(lambda: {o.lesion.key: o for o in evaluate(model, split, lesions, k=1, engine="reference", batch_size=batch_size)})


def run_captum(model, split, calls, ppe, batch_size=256):  # type: ignore[no-untyped-def]
    """``calls``: (layer, [unit groups, disjoint]) per LayerFeatureAblation call. Returns per-sample correctness per lesion key."""
    from captum.attr import LayerFeatureAblation

    modules = dict(model.named_modules())

    def correct(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (model(x).argmax(1) == labels).float()

    def go():  # type: ignore[no-untyped-def]
        out: dict[str, list[torch.Tensor]] = {}
        with torch.inference_mode():
            for layer, groups in calls:
                module = modules[layer]
                conv = isinstance(module, nn.Conv2d)
                n_units = module.out_channels if conv else module.out_features
                mask = torch.full((n_units,), len(groups), dtype=torch.long)
                for g, units in enumerate(groups):
                    mask[list(units)] = g
                mask = mask.view(1, -1, 1, 1) if conv else mask.view(1, -1)
                ablation = LayerFeatureAblation(correct, module)
                for x, y in split.batches(batch_size):
                    base = correct(x, y)
                    attr = ablation.attribute(x, additional_forward_args=(y,), layer_mask=mask, perturbations_per_eval=ppe)
                    attr = attr.flatten(2)[:, :, 0] if conv else attr
                    for units in groups:
                        key = Lesion(((layer, tuple(units)),)).key
                        out.setdefault(key, []).append(base - attr[:, units[0]])
        return {key: torch.cat(v).numpy() for key, v in out.items()}

    return _timed(go)


def disjoint_calls(layer: str, groups: list[tuple[int, ...]]) -> list[tuple[str, list[tuple[int, ...]]]]:
    """Pack groups greedily into calls of disjoint groups (a Captum mask is a partition)."""
    calls: list[list[tuple[int, ...]]] = []
    for group in groups:
        for call in calls:
            if not any(set(group) & set(g) for g in call):
                call.append(group)
                break
        else:
            calls.append([group])
    return [(layer, call) for call in calls]


def similar_groups(model: nn.Module, layer: str, fraction: float) -> list[tuple[int, ...]]:
    """One group per reference filter: it and its nearest filters (Euclidean, unit-normalised weights)."""
    w = dict(model.named_modules())[layer].weight.detach().flatten(1)
    w = w / w.norm(dim=1, keepdim=True)
    size = max(1, round(fraction * len(w)))
    nearest = torch.cdist(w, w).argsort(dim=1)[:, :size]  # the filter itself first (distance 0)
    return [tuple(sorted(row.tolist())) for row in nearest]


def per_class_gap(engine: dict, captum: dict, labels: np.ndarray) -> float:
    """Largest |per-class accuracy difference| between Captum and the engine over common lesions."""
    gap = 0.0
    n = None
    for key, correct in captum.items():
        n = len(correct)
        mine = engine[key].topk[:n, 0] == labels[:n]
        for c in np.unique(labels[:n]):
            sel = labels[:n] == c
            gap = max(gap, abs(float(mine[sel].mean()) - float(correct[sel].mean())))
    return gap


# ---- the workloads -----------------------------------------------------------------------------------


def workload(title, model, split, lesions, calls, sub_n, sub_lesions, peak, reps, ppes, report):  # type: ignore[no-untyped-def]
    """Time the engine on everything, reference and Captum on a subset (extrapolated per lesion·sample)."""
    model.eval()
    n = len(split)
    sub = split.head(sub_n)
    sub_keys = {lesion.key for lesion in sub_lesions}
    sub_calls = [(layer, [g for g in groups if Lesion(((layer, g),)).key in sub_keys]) for layer, groups in calls]
    sub_calls = [(layer, groups) for layer, groups in sub_calls if groups]
    macs = layer_macs(model, split.inputs[:1])
    bound = lower_bound_macs(macs, lesions) * n
    t_engine, exact = [], None
    ratio_ref, ratio_cap, t_ref_full, t_cap_full = [], [], [], []
    best_ppe, gap = None, float("nan")
    rss = 0.0
    for _ in range(reps):
        t, exact = run_engine(model, split, lesions)
        rss = max(rss, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
        t_engine.append(t)
        t_sub_ref, _ = run_reference(model, sub, sub_lesions)
        full_ref = t_sub_ref * (len(lesions) * n) / (len(sub_lesions) * len(sub))
        t_ref_full.append(full_ref)
        ratio_ref.append(full_ref / t)
        if calls is not None and _has_captum():
            times = {}
            for ppe in ppes if best_ppe is None else [best_ppe]:
                times[ppe], cap = run_captum(model, sub, sub_calls, ppe)
            best_ppe = min(times, key=times.get)
            full_cap = times[best_ppe] * (len(lesions) * n) / (sum(len(g) for _, g in sub_calls) * len(sub))
            t_cap_full.append(full_cap)
            ratio_cap.append(full_cap / t)
            gap = per_class_gap(exact, cap, split.labels.numpy())
    t_med = statistics.median(t_engine)
    lines = [
        f"### {title}",
        "",
        f"{len(lesions)} lesions × {n} samples. Reference timed on {len(sub_lesions)} lesions × {len(sub)} samples"
        + (f", Captum on {sum(len(g) for _, g in sub_calls)} lesions × {len(sub)} samples" if t_cap_full else "")
        + f", both extrapolated per lesion·sample; {reps} interleaved repetition(s), medians (of ratios).",
        "",
        "| method | time (s) | lesions/s | lesion·samples/s | engine speed-up |",
        "|---|---|---|---|---|",
        f"| engine (fast, exact) | {t_med:.2f} | {len(lesions) / t_med:.1f} | {len(lesions) * n / t_med:,.0f} | 1 |",
        f"| reference (one forward per lesion) | {statistics.median(t_ref_full):.1f} (extrap.) | {len(lesions) / statistics.median(t_ref_full):.2f} "
        f"| {len(lesions) * n / statistics.median(t_ref_full):,.0f} | {statistics.median(ratio_ref):.1f}× |",
    ]
    if t_cap_full:
        tc = statistics.median(t_cap_full)
        lines.append(
            f"| Captum LayerFeatureAblation (ppe={best_ppe}) | {tc:.1f} (extrap.) | {len(lesions) / tc:.2f} | {len(lesions) * n / tc:,.0f} "
            f"| {statistics.median(ratio_cap):.1f}× |"
        )
    achieved = 2 * bound / t_med / 1e9
    lines += [
        "",
        f"FLOP lower bound: {2 * bound / 1e9:.4g} GFLOP; engine achieves {achieved:.1f} GFLOP/s on it = "
        f"{100 * achieved / peak:.0f} % of the measured peak ({peak:.0f} GFLOP/s). Peak RSS so far: {rss:.2f} GiB.",
    ]
    if t_cap_full:
        lines.append(f"Per-class accuracy, Captum vs engine on the common lesions: largest difference {gap:.2e}.")
    lines.append("")
    report.extend(lines)
    print("\n".join(lines), flush=True)
    return exact, t_med


def spearman_line(model, split, layer_names, exact, report):  # type: ignore[no-untyped-def]
    t, table = _timed(lambda: estimate(model, split, layer_names, batch_size=500))
    overall = table[table["class"] == "overall"].set_index("lesion")["change"]
    labels = split.labels.numpy()
    intact_acc = float(table[table["class"] == "overall"]["intact_accuracy"].iloc[0])
    n = len(labels)  # the estimate may use the first n samples of the exact sweep's data
    drops = {key: intact_acc - float((o.topk[:n, 0] == labels).mean()) for key, o in exact.items() if key in overall.index}
    keys = sorted(drops)
    rho = spearmanr([-overall[k] for k in keys], [drops[k] for k in keys]).statistic
    line = f"First-order estimate ({', '.join(layer_names)}; {len(keys)} single lesions, {t:.1f} s): Spearman ρ with the exact overall drop = {rho:.3f}."
    report.extend([line, ""])
    print(line, flush=True)


# ---- GPU: the small VGG and VGG-19-BN at 224 px, float32 and bf16 ------------------------------------


def gpu_section(device: torch.device, quick: bool, args: argparse.Namespace) -> list[str]:
    """Lesion-images/s and % of the measured bf16 peak, float32 vs bf16 autocast (+ channels-last)."""
    torch.manual_seed(0)
    peak = peak_bf16_tflops(device) if device.type == "cuda" else float("nan")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke run, not a measurement)"
    report = [
        "# GPU benchmark results",
        "",
        f"Command: `{' '.join(['python', *sys.argv])}`. Device: {name}; torch {torch.__version__}. "
        f"Measured bf16 peak: {peak:.0f} TFLOP/s (best of 5 8192² bf16 matmuls).",
        "Networks are random-initialised (seeded); images are synthetic (N(0, 1)). Lesions: 10 % similar-filter "
        "groups of every conv layer (the first groups of each layer where stated). The % of peak counts only the "
        "multiply-adds that must be redone after the lesioned layer (the FLOP lower bound).",
        "",
    ]
    small = vgg(11, batch_norm=True, n_classes=10, in_channels=1, image_size=32, width_divisor=4, classifier_width=128)
    if quick:
        big = vgg(19, batch_norm=True, n_classes=1000, image_size=32, width_divisor=8, classifier_width=256)
        cases = [("VGG11-bn, 32 px, width/4", small, (1, 32, 32), 64, None), ("VGG-19-BN, 32 px, width/8 (quick)", big, (3, 32, 32), 8, 2)]
    else:
        big = vgg(19, batch_norm=True, n_classes=1000, image_size=224)
        cases = [("VGG11-bn, 32 px, width/4", small, (1, 32, 32), 10_000, None),
                 ("VGG-19-BN, 224 px", big, (3, 224, 224), args.gpu_images, args.gpu_groups)]  # fmt: skip
    for title, model, shape, n, per_layer in cases:
        model = model.to(device).eval()
        split = Split("synthetic", torch.randn(n, *shape), torch.randint(0, 10 if shape[0] == 1 else 1000, (n,)),
                      tuple(str(i) for i in range(10 if shape[0] == 1 else 1000)))  # fmt: skip
        lesions = []
        for layer in vgg_conv_layers(model):
            groups = similar_groups(model, layer, 0.10)
            lesions += [Lesion(((layer, g),)) for g in groups[:per_layer]]
        macs = layer_macs(model.cpu(), split.inputs[:1])
        model.to(device)
        flops = 2 * lower_bound_macs(macs, lesions) * n
        rows, results = [], {}
        for label, options in (("float32", {}), ("bf16 autocast", {"autocast": "bf16"}),
                               ("bf16 autocast + channels-last", {"autocast": "bf16", "channels_last": True})):  # fmt: skip
            run_engine(model, split.head(min(n, 64)), lesions[:4], batch_size=args.gpu_batch, **options)  # warm-up
            t, results[label] = run_engine(model, split, lesions, batch_size=args.gpu_batch, **options)
            rate = flops / t / 1e12
            rows.append(f"| {label} | {t:.2f} | {len(lesions) / t:,.1f} | {len(lesions) * n / t:,.0f} | {rate:.1f} | {100 * rate / peak:.0f} % |")
        differ = sum(int((results["bf16 autocast"][key].topk[:, 0] != o.topk[:, 0]).sum()) for key, o in results["float32"].items())
        lines = [
            f"### {title}: {len(lesions)} lesions × {n:,} images" + (f" (first {per_layer} groups per conv layer)" if per_layer else ""),
            "",
            "| precision | time (s) | lesions/s | lesion·images/s | TFLOP/s on the lower bound | % of bf16 peak |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"Top-1 predictions that differ between bf16 autocast and float32: {differ:,} of {len(lesions) * n:,} "
            f"({100 * differ / (len(lesions) * n):.3f} %).",
            "",
        ]
        report += lines
        print("\n".join(lines), flush=True)
    return report


def _has_captum() -> bool:
    try:
        import captum  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not a measurement")
    parser.add_argument("--vgg-samples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("RESULTS.md")))
    parser.add_argument("--sections", default="cpu,gpu,shapley,scale", help="cpu, gpu, shapley, scale, comma-separated (gpu: skipped without CUDA)")
    parser.add_argument("--gpu-device", default="cuda", help="device of the gpu section (cpu: a smoke run with --quick)")
    parser.add_argument("--gpu-out", default=str(Path(__file__).with_name("RESULTS-GPU.md")))
    parser.add_argument("--gpu-images", type=int, default=512, help="synthetic 224 px images for VGG-19-BN")
    parser.add_argument("--gpu-groups", type=int, default=16, help="VGG-19-BN: first N groups of each conv layer")
    parser.add_argument("--gpu-batch", type=int, default=256, help="images per data batch on the GPU")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sections = set(args.sections.split(","))
    if "gpu" in sections:
        device = torch.device(args.gpu_device)
        if device.type == "cuda" and not torch.cuda.is_available():
            print("gpu section skipped: CUDA is not available here", flush=True)
        else:
            Path(args.gpu_out).write_text("\n".join(gpu_section(device, args.quick, args)) + "\n")
            print(f"wrote {args.gpu_out}")
    if "cpu" in sections:
        cpu_section(args)
    if "shapley" in sections:  # lesion shapley vs msapy (bench/shapley.py)
        from shapley import shapley_section

        lines = shapley_section(quick=args.quick)
        Path(args.out).with_name("RESULTS-SHAPLEY.md").write_text("# Benchmark results: Shapley values\n\n" + "\n".join(lines) + "\n")
        print("\n".join(lines), flush=True)
    if "scale" in sections:  # the 130,816-pair sweep: store overhead, engine vs floor, run size (bench/scale.py)
        import tempfile

        from scale import scale_section

        with tempfile.TemporaryDirectory() as tmp:
            lines = scale_section(1000, 500 if args.quick else 0, 10_000, 50 if args.quick else 2000, Path(tmp))
        scale_out = Path(args.out).with_name("RESULTS-SCALE.md")
        scale_out.write_text("\n".join(lines) + "\n")
        print(f"wrote {scale_out}")


def cpu_section(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    peak = peak_gflops()
    report = [
        "# Benchmark results",
        "",
        f"Command: `{' '.join(['python', *sys.argv])}` (GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', 'unset')}).",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, float32, load average at start {os.getloadavg()[0]:.1f}. "
        f"Measured peak: {peak:.0f} GFLOP/s (4096² float32 matmul).",
        "Networks are random-initialised (seeded): no trained checkpoints are used; speed and exactness do not depend on training.",
        "" if _has_captum() else "**Captum is not installed (pip install captum failed): its column is skipped.**",
        "",
    ]
    print("\n".join(report), flush=True)

    mnist = load_test("mnist")
    mnist = Split(mnist.name, mnist.inputs.flatten(1), mnist.labels, mnist.class_names)
    fashion = load_test("fashion-mnist")
    if args.quick:
        mnist, fashion = mnist.head(1000), fashion.head(500)

    mlp = meyes2019_mlp().eval()
    mlp_single, mlp_pairs = list(single(mlp, "fc1").lesions), list(pairs(mlp, "fc1").lesions)
    rounds = [[(r, 19)] + [((r + i) % 19, (r - i) % 19) for i in range(1, 10)] for r in range(19)]  # circle method
    pair_calls = [("fc1", [tuple(sorted(p)) for p in pairs_r]) for pairs_r in rounds]
    exact, _ = workload("2019 MLP, fc1 singles (20)", mlp, mnist, mlp_single, [("fc1", [(u,) for u in range(20)])],
                     len(mnist), mlp_single, peak, 3, (1, 8, 32), report)  # fmt: skip
    spearman_line(mlp, mnist, ["fc1"], exact, report)
    workload("2019 MLP, fc1 pairs (190)", mlp, mnist, mlp_pairs, pair_calls, len(mnist), mlp_pairs, peak, 3, (1, 8, 32), report)
    t_both, _ = run_engine(mlp, mnist, mlp_single + mlp_pairs)
    report += [f"MLP singles + pairs in one call: {t_both:.3f} s (target ≤ 0.5 s).", ""]

    cnn = meyes2020_cnn().eval()
    cnn_layers = ["conv1", "conv2", "conv3", "fc1", "fc2"]  # 64 * 3 + 512 * 2 = 1,216 units
    cnn_lesions = [lesion for layer in cnn_layers for lesion in single(cnn, layer).lesions]
    sub = [lesion for layer in cnn_layers for lesion in single(cnn, layer).lesions[:4]]
    calls = [("conv1", [(u,) for u in range(64)])] + [(layer, [(u,) for u in range(4)]) for layer in cnn_layers[1:]]
    exact, t_cnn = workload("2020 CNN, every unit of every layer (1,216 singles)", cnn, fashion, cnn_lesions, calls,
                     100 if not args.quick else 20, sub, peak, 1, (1, 8, 32), report)  # fmt: skip
    report += [f"CNN target: ≤ 120 s end to end, ≤ 4 GiB: measured {t_cnn:.1f} s.", ""]
    spearman_line(cnn, fashion.head(2000), cnn_layers, exact, report)

    net = vgg(11, batch_norm=True, n_classes=10, in_channels=1, image_size=32, width_divisor=4, classifier_width=128).eval()
    fashion32 = load_test("fashion-mnist", pad=2).head(args.vgg_samples if not args.quick else 100)
    for fraction in (0.10, 0.25):
        lesions, calls_v = [], []
        for layer in vgg_conv_layers(net):
            groups = similar_groups(net, layer, fraction)
            lesions += [Lesion(((layer, g),)) for g in groups]
            calls_v += disjoint_calls(layer, groups[:2])
        sub_v = [Lesion(((layer, g),)) for layer, gs in calls_v for g in gs]
        workload(f"VGG11-bn (32 px, width/4, classifier 128), {int(fraction * 100)} % similar-filter groups in every conv layer",
                 net, fashion32, lesions, calls_v, 50 if not args.quick else 20, sub_v, peak, 1, (1,), report)  # fmt: skip
    Path(args.out).write_text("\n".join(report) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
