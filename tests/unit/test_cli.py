"""The `lesion` command, run as a user runs it: a subprocess."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from lesion.models import meyes2019_mlp
from lesion.store import Run


def lesion_cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "lesion", *map(str, args)], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"lesion {args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = lesion_cli("demo", "--out", out, "--epochs", "15")
    assert "Intact network: top-1" in proc.stdout and "Largest overall top-1 drops (30 lesions)" in proc.stdout
    assert "Largest class-specific gain" in proc.stdout or "No lesion improved" in proc.stdout
    run = Run(out / "lesions")  # the demo is the study of examples/digits.toml
    lesions = run.lesions()
    assert len(lesions) == 1 + 30 + 190 and lesions["done"].all()
    assert set(lesions["plan"]) == {"intact", "single", "pairs"}
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert "bars-intact.png" in figures and "bars-intact.svg" in figures and len(figures) == 4
    assert (out / "model.pt").is_file() and (out / "summary.md").is_file()
    again = lesion_cli("demo", "--out", out, "--epochs", "15")  # resumes: nothing left to do, same numbers
    assert again.stdout.splitlines()[:3] == proc.stdout.splitlines()[:3]


def test_layers_lists_units_and_bad_model_exits_2():
    proc = lesion_cli("layers", "--model", "meyes2020-cnn")
    assert "conv1" in proc.stdout and "512" in proc.stdout
    bad = lesion_cli("layers", "--model", "vgg19bn", check=False)
    assert bad.returncode == 2 and "closest: 'vgg19_bn'" in bad.stderr and "Traceback" not in bad.stderr


def test_sweep_summary_export(tmp_path):
    torch.manual_seed(0)
    ckpt = tmp_path / "mlp.pt"
    torch.save(meyes2019_mlp(in_features=64).state_dict(), ckpt)
    run_dir = tmp_path / "run"
    lesion_cli("sweep", "-m", "meyes2019-mlp", "-c", ckpt, "--model-arg", "in_features=64", "-d", "digits",
               "-l", "fc2:0-3", "--plan", "pairs", "-o", run_dir, "--limit", "100")
    assert Run(run_dir).lesions()["done"].sum() == 1 + 6
    summary = lesion_cli("summary", run_dir).stdout
    assert "Intact network" in summary and "fc2:" in summary
    lesion_cli("export", run_dir, "--format", "parquet")
    metrics = pd.read_parquet(run_dir / "export" / "metrics.parquet")
    assert set(metrics["lesion"]) == {"intact", "fc2:0-1", "fc2:0,2", "fc2:0,3", "fc2:1-2", "fc2:1,3", "fc2:2-3"}


def test_sweep_bad_input_exits_2_and_writes_nothing(tmp_path):
    torch.manual_seed(0)
    ckpt = tmp_path / "mlp.pt"
    torch.save(meyes2019_mlp().state_dict(), ckpt)  # 784 inputs: digits are 8x8
    out = tmp_path / "run"
    bad = lesion_cli("sweep", "-m", "meyes2019-mlp", "-c", ckpt, "-d", "digits", "-l", "fc1", "-o", out, check=False)
    assert bad.returncode == 2 and "do not fit the model" in bad.stderr
    bad = lesion_cli("sweep", "-m", "meyes2019-mlp", "-c", ckpt, "-d", "digits", "-l", "fc9", "-o", out, check=False)
    assert bad.returncode == 2 and "unknown layer 'fc9'" in bad.stderr
    bad = lesion_cli("sweep", "-m", "meyes2019-mlp", "-c", ckpt, "-d", "digits", "-l", "fc1", "-o", out,
                     "--device", "tpu", check=False)
    assert bad.returncode == 2 and "--device: expected one of" in bad.stderr
    assert not out.exists()


def test_train_population_command(tmp_path):
    out = tmp_path / "pop"
    lesion_cli("train", "meyes2019-mlp", "--data", "digits", "--model-arg", "in_features=64", "--seeds", "0-1",
               "--epochs", "2", "--lr", "0.05", "--out", out, "--threads", "1")
    manifest = json.loads((out / "population.json").read_text())
    assert sorted(manifest["seeds"]) == ["0", "1"]
    a, b = (torch.load(out / f"seed-00{i}.pt", weights_only=True) for i in (0, 1))
    assert len(a["history"]) == 2 and not torch.equal(a["trained"]["fc1.weight"], b["trained"]["fc1.weight"])
    bad = lesion_cli("train", "meyes2019-mlp", "--data", "digits", "--seeds", "x", "--out", out, check=False)
    assert bad.returncode == 2 and "--seeds" in bad.stderr
    unavailable = "mps" if torch.cuda.is_available() else "cuda"
    gone = lesion_cli("train", "meyes2019-mlp", "--data", "digits", "--out", tmp_path / "gpu", "--device", unavailable, check=False)
    assert gone.returncode == 2 and "--device: expected one of" in gone.stderr and not (tmp_path / "gpu").exists()


@pytest.mark.parametrize("args", [["--help"], ["sweep", "--help"], ["demo", "--help"], ["train", "--help"]])
def test_help_teaches(args):
    proc = lesion_cli(*args)
    assert "Usage" in proc.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt exists on Linux only")
def test_tune_malloc_sets_glibc_options_unless_the_user_did(monkeypatch):
    from lesion.cli._common import tune_malloc

    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert tune_malloc() is True  # mallopt returns 0 for an unknown option or a bad value
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")
    assert tune_malloc() is False
