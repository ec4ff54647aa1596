"""The Ray backend against a local run, on a real local Ray instance: same database outcome for outcome,
a worker killed mid-shard (its shard is evaluated again), and a killed Ray sweep resumed."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

import lesion
from fixtures.rundb import count_outcomes, db_rows
from lesion import LesionError
from lesion.data import digits
from lesion.models import meyes2019_mlp, meyes2020_cnn

ray = pytest.importorskip("ray")

@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_sweep_stores_the_local_run_outcome_for_outcome(tmp_path):
    torch.manual_seed(0)
    mlp = meyes2019_mlp(in_features=64)
    data = digits().test
    plans = [lesion.single(mlp, "fc1;fc2"), lesion.pairs(mlp, "fc1")]
    local = lesion.sweep(mlp, data, plans, tmp_path / "local")
    remote = lesion.sweep(mlp, data, plans, tmp_path / "ray", backend="ray")
    assert len(remote.lesions()) == 1 + 30 + 190 and remote.lesions()["done"].all()
    assert db_rows(tmp_path / "ray") == db_rows(tmp_path / "local")
    assert local.table("top1").equals(remote.table("top1"))


def test_ray_sweep_of_a_cnn_with_mean_lesions_equals_the_local_run(tmp_path):
    torch.manual_seed(1)
    cnn = meyes2020_cnn(image_size=8, width=4, n_classes=10)
    data = digits().test.head(120)
    plans = [lesion.single(cnn, "conv2;fc1:0-20", method="mean")]
    lesion.sweep(cnn, data, plans, tmp_path / "local")
    lesion.sweep(cnn, data, plans, tmp_path / "ray", backend="ray")
    assert db_rows(tmp_path / "ray") == db_rows(tmp_path / "local")


def _shard_worker_pids():
    """Processes whose title says a Ray actor is running a shard right now (Ray sets ray::Class.method)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::ShardWorker.evaluate"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker process through /proc")
def test_a_worker_killed_mid_shard_is_replaced_and_the_database_is_the_same(tmp_path):
    torch.manual_seed(0)
    mlp = meyes2019_mlp(in_features=64)
    mlp.out.register_forward_hook(lambda m, i, o: time.sleep(0.02))  # a shard takes a while: killed mid-way
    data = digits().test
    plans = [lesion.single(mlp, "fc1;fc2")]
    lesion.sweep(mlp, data, plans, tmp_path / "local", engine="reference")
    killed = []

    def kill_one():
        deadline = time.time() + 120
        while not killed and time.time() < deadline:
            pids = _shard_worker_pids()
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one)
    killer.start()
    with pytest.warns(UserWarning, match="lost its worker.*evaluating it again"):
        lesion.sweep(mlp, data, plans, tmp_path / "ray", engine="reference", backend="ray")
    killer.join()
    assert killed, "no shard worker was seen running"
    assert db_rows(tmp_path / "ray") == db_rows(tmp_path / "local")


SCRIPT = textwrap.dedent(
    """
    import sys, time, ray, torch, lesion
    from lesion.data import digits
    from lesion.models import meyes2019_mlp
    torch.manual_seed(0)
    model = meyes2019_mlp(in_features=64)
    model.out.register_forward_hook(lambda m, i, o: time.sleep(0.01))
    ray.init(address=sys.argv[2], log_to_driver=False)
    lesion.sweep(model, digits().test, [lesion.single(model, "fc1;fc2"), lesion.pairs(model, "fc2")],
                 sys.argv[1], engine="reference", batch_size=64, backend="ray")
    """
)


def test_a_killed_ray_sweep_resumes_to_the_local_database(tmp_path):
    script = tmp_path / "sweep.py"
    script.write_text(SCRIPT)
    killed = tmp_path / "killed"
    address = ray.get_runtime_context().gcs_address
    proc = subprocess.Popen([sys.executable, str(script), str(killed), address])
    deadline = time.time() + 180
    while count_outcomes(killed) < 6 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = count_outcomes(killed)
    total = 1 + 30 + 45
    assert 6 <= partial < total, "the run must be killed mid-way"
    torch.manual_seed(0)
    model = meyes2019_mlp(in_features=64)
    plans = [lesion.single(model, "fc1;fc2"), lesion.pairs(model, "fc2")]
    lesion.sweep(model, digits().test, plans, killed, engine="reference", batch_size=64, backend="ray")
    lesion.sweep(model, digits().test, plans, tmp_path / "local", engine="reference", batch_size=64)
    assert count_outcomes(killed) == total
    assert db_rows(killed) == db_rows(tmp_path / "local")


def test_backend_and_address_are_checked(tmp_path):
    mlp = meyes2019_mlp(in_features=64)
    with pytest.raises(LesionError, match="backend must be one of"):
        lesion.sweep(mlp, digits().test, lesion.single(mlp, "fc2"), tmp_path / "a", backend="rey")
    with pytest.raises(LesionError, match="address is for backend 'ray' only"):
        lesion.sweep(mlp, digits().test, lesion.single(mlp, "fc2"), tmp_path / "b", address="auto")


def test_the_sweep_command_runs_on_the_ray_cluster_it_is_given(tmp_path):
    torch.manual_seed(0)
    mlp = meyes2019_mlp(in_features=64)
    torch.save(mlp.state_dict(), tmp_path / "net.pt")
    address = ray.get_runtime_context().gcs_address
    args = ["-m", "meyes2019-mlp", "--model-arg", "in_features=64", "-c", tmp_path / "net.pt", "-d", "digits", "-l", "fc2"]
    proc = subprocess.run([sys.executable, "-m", "lesion", "sweep", *map(str, args), "-o", str(tmp_path / "ray"),
                           "--backend", "ray", "--address", address], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Intact network: top-1" in proc.stdout
    lesion.sweep(mlp, digits().test, lesion.single(mlp, "fc2"), tmp_path / "local")
    ray_rows, local_rows = db_rows(tmp_path / "ray"), db_rows(tmp_path / "local")
    assert all(ray_rows[t] == local_rows[t] for t in ("lesions", "outcomes", "metrics")) and len(ray_rows["outcomes"]) == 11
    bad = subprocess.run([sys.executable, "-m", "lesion", "sweep", *map(str, args), "-o", str(tmp_path / "bad"),
                          "--backend", "rey"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--backend: expected one of ('local', 'ray'), got 'rey' (closest: 'ray')" in bad.stderr


def test_a_study_file_with_backend_ray_stores_what_a_local_study_stores(tmp_path):
    settings = {
        "name": "ray-digits", "seed": 0,
        "model": {"name": "meyes2019-mlp", "args": {"in_features": 64}, "train": {"epochs": 2}},
        "data": {"name": "digits", "limit": 120},
        "plans": [{"kind": "single", "layers": "fc1;fc2"}],
    }
    local = lesion.run_study(settings, tmp_path / "local")
    remote = lesion.run_study({**settings, "engine": {"backend": "ray"}}, tmp_path / "ray")
    assert db_rows(remote.out / "lesions") == db_rows(local.out / "lesions")
    with pytest.raises(LesionError, match="backend"):
        lesion.run_study({**settings, "engine": {"backend": "rya"}}, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
