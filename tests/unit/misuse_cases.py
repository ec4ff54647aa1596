"""Misuses of the `lesion` command, tried as a new and as a hostile user would.

Each case: an id, the arguments (``{name}`` fields are paths of the workspace that
:func:`make_workspace` builds), and a text the one ``error:`` line must contain (the option named).
``test_misuse.py`` runs them all; the same list printed the before/after table of issue 12.
"""

from __future__ import annotations

from pathlib import Path

MLP = ["-m", "meyes2019-mlp", "-c", "{mlp64}", "--model-arg", "in_features=64", "-d", "digits"]
SWEEP = ["sweep", *MLP, "-l", "fc2", "-o", "{new}"]
ESTIMATE = ["estimate", *MLP, "-l", "fc1"]
TRAIN = ["train", "meyes2019-mlp", "--data", "digits", "--model-arg", "in_features=64", "--epochs", "1", "-o", "{new}"]
SHAPLEY = ["shapley", *MLP, "-l", "fc1:0-3", "-o", "{new}"]
IMPROVE = ["improve", *MLP, "-l", "fc2", "-o", "{new}"]
RECOVER = ["recover", "-c", "{lesion64}", "-d", "digits", "-l", "fc1", "--epochs", "1", "-o", "{new}"]

CASES: list[tuple[str, list[str], str]] = [
    # layers
    ("layers-model-arg-unknown", ["layers", "-m", "meyes2019-mlp", "--model-arg", "foo=1"], "--model-arg"),
    ("layers-model-arg-no-value", ["layers", "-m", "meyes2019-mlp", "--model-arg", "novalue"], "--model-arg"),
    ("layers-checkpoint-other-model", ["layers", "-m", "meyes2020-cnn", "-c", "{lesion64}"], "--checkpoint"),
    ("layers-checkpoint-not-weights", ["layers", "-m", "meyes2019-mlp", "-c", "{textfile}"], "checkpoint"),
    ("layers-zoo-typo", ["layers", "-m", "vgg19bn"], "vgg19_bn"),
    # sweep
    ("sweep-limit-0", [*SWEEP, "--limit", "0"], "--limit"),
    ("sweep-limit-negative", [*SWEEP, "--limit", "-5"], "--limit"),
    ("sweep-batch-size-0", [*SWEEP, "--batch-size", "0"], "--batch-size"),
    ("sweep-memory-0", [*SWEEP, "--memory", "0"], "--memory"),
    ("sweep-memory-words", [*SWEEP, "--memory", "lots"], "--memory"),
    ("sweep-engine-typo", [*SWEEP, "--engine", "fsat"], "--engine"),
    ("sweep-float32-check-negative", [*SWEEP, "--float32-check", "-1"], "--float32-check"),
    ("sweep-device-absent", [*SWEEP, "--device", "tpu"], "--device"),
    ("sweep-no-checkpoint", ["sweep", "-m", "meyes2019-mlp", "--model-arg", "in_features=64", "-d", "digits", "-l", "fc2", "-o", "{new}"], "--random-init"),
    ("sweep-inputs-do-not-fit", ["sweep", "-m", "meyes2019-mlp", "-c", "{mlp784}", "-d", "digits", "-l", "fc2", "-o", "{new}"], "do not fit"),
    ("sweep-layer-colon-no-units", ["sweep", *MLP, "-l", "fc1:", "-o", "{new}"], "fc1:"),
    ("sweep-empty-range", ["sweep", *MLP, "-l", "fc1:9-3", "-o", "{new}"], "fc1"),
    ("sweep-unit-out-of-range", ["sweep", *MLP, "-l", "fc1:20", "-o", "{new}"], "0-19"),
    ("sweep-unknown-layer", ["sweep", *MLP, "-l", "fc9", "-o", "{new}"], "fc9"),
    ("sweep-normalize-digits", [*SWEEP, "--normalize", "half"], "--normalize"),
    ("sweep-normalize-typo", ["sweep", *MLP[:-2], "-d", "mnist", "-l", "fc2", "-o", "{new}", "--normalize", "halve"], "--normalize"),
    ("sweep-out-is-file", ["sweep", *MLP, "-l", "fc2", "-o", "{textfile}"], "--out"),
    ("sweep-out-not-a-run", ["sweep", *MLP, "-l", "fc2", "-o", "{notrun}"], "--out"),
    ("sweep-unknown-data", ["sweep", *MLP[:-2], "-d", "nosuch", "-l", "fc2", "-o", "{new}"], "--data"),
    ("sweep-checkpoint-other-model", ["sweep", "-m", "meyes2020-cnn", "-c", "{lesion64}", "-d", "digits", "-l", "fc1", "-o", "{new}"], "--checkpoint"),
    ("sweep-model-arg-unknown", [*SWEEP, "--model-arg", "foo=1"], "--model-arg"),
    ("sweep-resume-other-method", ["sweep", *MLP, "-l", "fc2", "-o", "{run}", "--method", "mean"], "method"),
    ("sweep-resume-other-selection", ["sweep", *MLP, "-l", "fc2:0-3", "-o", "{run}"], "--extend"),
    ("sweep-resume-other-data", ["sweep", *MLP, "-l", "fc2", "-o", "{run}", "--limit", "50"], "dataset"),
    ("sweep-resume-other-weights", ["sweep", "-m", "meyes2019-mlp", "-c", "{other64}", "--model-arg", "in_features=64", "-d", "digits", "-l", "fc2", "-o", "{run}"], "model"),
    ("sweep-fraction-without-fractions", [*SWEEP, "--plan", "fraction"], "--fractions"),
    ("sweep-fraction-out-of-range", [*SWEEP, "--plan", "fraction", "--fractions", "0.5,1.5"], "--fractions"),
    ("sweep-fraction-units", ["sweep", *MLP, "-l", "fc1:0-3", "-o", "{new}", "--plan", "fraction", "--fractions", "0.5"], "--layers"),
    ("sweep-fraction-draws-huge", [*SWEEP, "--plan", "fraction", "--fractions", "0.5", "--draws", "1000000000"], "--draws"),
    ("sweep-fractions-without-plan", [*SWEEP, "--fractions", "0.5"], "--fractions"),
    # estimate
    ("estimate-inputs-do-not-fit", ["estimate", "-m", "meyes2019-mlp", "-c", "{mlp784}", "-d", "digits", "-l", "fc1"], "do not fit"),
    ("estimate-limit-0", [*ESTIMATE, "--limit", "0"], "--limit"),
    ("estimate-batch-size-0", [*ESTIMATE, "--batch-size", "0"], "--batch-size"),
    ("estimate-top-0", [*ESTIMATE, "--top", "0"], "--top"),
    ("estimate-out-directory", [*ESTIMATE, "-o", "{notrun}"], "--out"),
    ("estimate-out-suffix", [*ESTIMATE, "-o", "{dir}/table.txt"], "--out"),
    ("estimate-layer-colon-no-units", ["estimate", *MLP, "-l", "fc1:"], "fc1:"),
    ("estimate-no-checkpoint", ["estimate", "-m", "meyes2019-mlp", "--model-arg", "in_features=64", "-d", "digits", "-l", "fc1"], "--random-init"),
    # summary / export
    ("summary-missing-run", ["summary", "{dir}/nosuch"], "nosuch"),
    ("summary-not-a-run", ["summary", "{notrun}"], "results.sqlite"),
    ("summary-top-0", ["summary", "{run}", "--top", "0"], "--top"),
    ("export-out-is-file", ["export", "{run}", "--out", "{textfile}"], "--out"),
    ("export-not-a-run", ["export", "{notrun}"], "results.sqlite"),
    # train
    ("train-seed-huge", [*TRAIN, "--seeds", "99999999999999999999"], "--seeds"),
    ("train-seed-range-huge", [*TRAIN, "--seeds", "0-1000000000"], "--seeds"),
    ("train-seed-range-empty", [*TRAIN, "--seeds", "5-2"], "--seeds"),
    ("train-seed-words", [*TRAIN, "--seeds", "x"], "--seeds"),
    ("train-seed-repeated", [*TRAIN, "--seeds", "1,1"], "--seeds"),
    ("train-threads-negative", [*TRAIN, "--threads", "-1"], "--threads"),
    ("train-workers-0", [*TRAIN, "--workers", "0"], "--workers"),
    ("train-batch-size-0", [*TRAIN, "--batch-size", "0"], "--batch-size"),
    ("train-epochs-0", [*TRAIN[:-4], "--epochs", "0", "-o", "{new}"], "--epochs"),
    ("train-lr-0", [*TRAIN, "--lr", "0"], "--lr"),
    ("train-momentum-1.5", [*TRAIN, "--momentum", "1.5"], "--momentum"),
    ("train-inputs-do-not-fit", ["train", "meyes2019-mlp", "--data", "digits", "--epochs", "1", "-o", "{new}"], "do not fit"),
    ("train-normalize-digits", [*TRAIN, "--normalize", "standard"], "--normalize"),
    ("train-out-is-file", [*TRAIN[:-2], "-o", "{textfile}"], "--out"),
    ("train-model-arg-unknown", [*TRAIN, "--model-arg", "foo=1"], "--model-arg"),
    ("train-device-absent", [*TRAIN, "--device", "tpu"], "--device"),
    ("train-no-train-split", [*TRAIN[:2], "--data", "nosuch", "-o", "{new}"], "--data"),
    # recover
    ("recover-inputs-do-not-fit", ["recover", "-m", "meyes2019-mlp", "-c", "{mlp784}", "-d", "digits", "-l", "fc1", "-o", "{new}"], "do not fit"),
    ("recover-unknown-layer", [*RECOVER[:5], "-l", "fc9", *RECOVER[7:]], "fc9"),
    ("recover-fraction-0", [*RECOVER, "--fraction", "0"], "--fraction"),
    ("recover-fraction-2", [*RECOVER, "--fraction", "2"], "--fraction"),
    ("recover-instances-0", [*RECOVER, "--instances", "0"], "--instances"),
    ("recover-instances-huge", [*RECOVER, "--instances", "1000000000"], "--instances"),
    ("recover-epochs-0", [*RECOVER[:-4], "--epochs", "0", "-o", "{new}"], "--epochs"),
    ("recover-threads-negative", [*RECOVER, "--threads", "-1"], "--threads"),
    ("recover-eval-samples-negative", [*RECOVER, "--eval-samples", "-1"], "--eval-samples"),
    ("recover-batch-size-0", [*RECOVER, "--batch-size", "0"], "--batch-size"),
    ("recover-out-is-file", [*RECOVER[:-2], "-o", "{textfile}"], "--out"),
    ("recover-checkpoint-other-model", ["recover", "-m", "meyes2020-cnn", "-c", "{lesion64}", "-d", "digits", "-l", "fc1", "-o", "{new}"], "--checkpoint"),
    # data and demo
    ("data-check-unknown", ["data", "check", "nosuch"], "nosuch"),
    ("data-check-missing-files", ["data", "check", "mnist", "--data-dir", "{notrun}"], "mnist"),
    ("data-fetch-unknown", ["data", "fetch", "nosuch", "--data-dir", "{new}"], "nosuch"),
    ("demo-epochs-0", ["demo", "-o", "{new}", "--epochs", "0"], "--epochs"),
    ("demo-seed-negative", ["demo", "-o", "{new}", "--seed", "-1"], "--seed"),
    ("demo-out-is-file", ["demo", "-o", "{textfile}"], "--out"),
    # training variants and cumulative plans
    ("train-optimizer-typo", [*TRAIN, "--optimizer", "adma"], "--optimizer"),
    ("train-dropout-1", [*TRAIN, "--dropout", "1"], "--dropout"),
    ("train-label-noise-above-1", [*TRAIN, "--label-noise", "2"], "--label-noise"),
    ("sweep-cumulative-step-0", [*SWEEP, "--plan", "cumulative", "--step", "0"], "--step"),
    # shapley and improve: the shared engine options, and the backend they cannot use
    ("shapley-backend-ray", [*SHAPLEY, "--backend", "ray"], "--backend"),
    ("shapley-address-without-ray", [*SHAPLEY, "--address", "127.0.0.1:6379"], "--address"),
    ("shapley-batch-size-0", [*SHAPLEY, "--batch-size", "0"], "batch_size"),
    ("shapley-device-absent", [*SHAPLEY, "--device", "tpu"], "device"),
    ("improve-backend-ray", [*IMPROVE, "--backend", "ray"], "--backend"),
    ("improve-memory-words", [*IMPROVE, "--memory", "lots"], "memory"),
    ("improve-engine-typo", [*IMPROVE, "--engine", "fsat"], "engine"),
    # reproduce
    ("reproduce-mlp-networks-huge", ["reproduce", "meyes2019-mlp", "--data", "digits", "--networks", "1000000000", "-o", "{new}"], "networks"),
]


def make_workspace(root: Path) -> dict[str, str]:
    """Checkpoints, a finished run, a text file and a non-run folder under ``root``; their paths by name."""
    import torch

    import lesion
    from lesion.data import load_dataset
    from lesion.models import CHECKPOINT_FORMAT, meyes2019_mlp

    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    mlp64 = meyes2019_mlp(in_features=64)
    torch.save(mlp64.state_dict(), root / "mlp64.pt")
    torch.save(meyes2019_mlp(in_features=64).state_dict(), root / "other64.pt")
    torch.save(meyes2019_mlp().state_dict(), root / "mlp784.pt")
    state = mlp64.state_dict()
    torch.save({"format": CHECKPOINT_FORMAT, "model": "meyes2019-mlp", "model_kwargs": {"in_features": 64},
                "initial": state, "trained": state}, root / "lesion64.pt")
    (root / "notes.txt").write_text("not a checkpoint\n")
    (root / "folder").mkdir(exist_ok=True)
    (root / "folder" / "keep.txt").write_text("someone's file\n")
    if not (root / "run").exists():
        split = load_dataset("digits").test
        lesion.sweep(mlp64, split, lesion.single(mlp64, "fc2"), root / "run", model_name="meyes2019-mlp").close()
    return {
        "dir": str(root), "mlp64": str(root / "mlp64.pt"), "other64": str(root / "other64.pt"),
        "mlp784": str(root / "mlp784.pt"), "lesion64": str(root / "lesion64.pt"), "textfile": str(root / "notes.txt"),
        "notrun": str(root / "folder"), "run": str(root / "run"), "new": str(root / "new"),
    }


def fill(args: list[str], paths: dict[str, str]) -> list[str]:
    return [a.format(**paths) for a in args]
