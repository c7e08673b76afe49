"""`gs://` paths end to end, against a GCS-compatible server on localhost (gcp-storage-emulator).

The emulator runs in this process (a thread); gcsfs (etils.epath's `gs://` backend) and TensorStore
(Orbax's array writer) are pointed at it with their emulator variables, which subprocesses inherit.
A digits pipeline with every path in `gs://` — teacher training, a run killed with SIGKILL and
resumed, distillation from a `gs://` teacher, evaluation, export, data, grid results and the
workdir lock — must equal the same pipeline on a local disk.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

# gcsfs would ask Google's control plane (with credentials) whether a bucket is hierarchical.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
pytest.importorskip("gcsfs", reason="the gs:// tests need the test extra: pip install -e '.[test]'")
emulator = pytest.importorskip("gcp_storage_emulator.server", reason="pip install -e '.[test]'")

from sa_mdrad_jax import checkpoints, grid, paths, workdir_lock  # noqa: E402
from sa_mdrad_jax.config import distill_config, teacher_entry  # noqa: E402
from sa_mdrad_jax.train import loop, writers  # noqa: E402
from util import ROOT, TINY_CONFIG, apply_overrides, assert_trees_equal, final_params, tiny_config  # noqa: E402

BUCKET = "sa-mdrad-test"


def _with_generation_headers(download):
    """Real GCS sends the object's generation as `x-goog-generation` with every download; the
    emulator does not, and TensorStore (Orbax's OCDBT manifests) refuses a read without it."""
    def handler(request, response, storage, *args, **kwargs):
        download(request, response, storage, *args, **kwargs)
        if response.status in (200, 206):
            obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
            response["x-goog-generation"] = obj["generation"]
            response["x-goog-metageneration"] = obj["metageneration"]
    handler.wraps = download
    return handler


@pytest.fixture(scope="module")
def gcs():
    """The emulator's base URL; the GCS clients of this process and its children talk to it."""
    from gcp_storage_emulator.handlers import objects
    if not hasattr(objects.download, "wraps"):   # media GETs reach `download` directly and through `get`
        original = objects.download
        objects.download = _with_generation_headers(original)
        for _, handlers in emulator.HANDLERS:
            for method, h in list(handlers.items()):
                if h is original:
                    handlers[method] = objects.download
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    server = emulator.create_server("localhost", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    url = f"http://localhost:{port}"
    env = {"STORAGE_EMULATOR_HOST": url,                 # gcsfs / google-cloud-storage
           "TENSORSTORE_GCS_HTTP_URL": url,              # TensorStore (Orbax's arrays)
           "TENSORSTORE_GCS_HTTP_VERSION": "1",
           "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator"}   # TensorStore: no credentials lookup
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    logging.getLogger("gcsfs").setLevel(logging.ERROR)   # "could not determine bucket type": no credentials
    yield f"gs://{BUCKET}"
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


def _records(workdir: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("time", "img_per_s")} for r in writers.read_metrics(workdir)]


def _teacher_config(**overrides):
    return tiny_config(**{"train.max_steps": 8, "train.num_devices": 1, "log.every_steps": 4,
                          "checkpoint.async_save": True, **overrides})


def _distill_config(teacher_dir: str):
    c = distill_config("rslad")
    base = tiny_config(**{"train.max_steps": 4, "train.num_devices": 1, "log.every_steps": 2})
    for block in ("dataset", "model", "train", "optim", "eval", "log", "checkpoint"):
        c[block] = base[block]
    c.method.update(steps=2)
    c.teachers["robust"] = teacher_entry("resnet_tiny", teacher_dir, normalize="digits")
    return c


@pytest.mark.slow
def test_pipeline_on_gcs_equals_the_local_one(gcs, tmp_path):
    from sa_mdrad_jax.evaluate import robustness
    from sa_mdrad_jax.interop import torch_export, torch_import

    results = {}
    for where, root in (("local", str(tmp_path)), ("gcs", f"{gcs}/pipeline")):
        teacher, student = paths.join(root, "teacher"), paths.join(root, "student")
        loop.train(_teacher_config(**{"log.tensorboard": where == "gcs"}), teacher)
        loop.train(_distill_config(teacher), student)
        record = robustness.evaluate_checkpoint(student, attack_names=("clean", "fgsm"), n_points=48, eps=8 / 255,
                                                batch_size=24, seed=0, curve_eps=(0.0, 8 / 255),
                                                out_dir=paths.join(student, "evaluation"))
        out = paths.join(root, "export", "student.safetensors")
        torch_export.export_torch(student, out)
        results[where] = {"teacher": final_params(teacher), "student": final_params(student),
                          "records": (_records(teacher), _records(student)), "accuracy": record["accuracy"],
                          "config": json.loads(paths.read_text(paths.join(student, "config.json"))),
                          "export": torch_import.read_state_dict(out),
                          "report": json.loads(paths.read_text(paths.join(student, "evaluation", "evaluation.json")))}

    local, remote = results["local"], results["gcs"]
    assert int(remote["student"]["step"]) == 4 and int(remote["teacher"]["step"]) == 8
    assert_trees_equal(remote["teacher"], local["teacher"])   # exactly: same computation, other storage
    assert_trees_equal(remote["student"], local["student"])
    assert remote["records"] == local["records"] and len(remote["records"][1]) >= 2
    assert remote["accuracy"] == local["accuracy"] and remote["report"]["accuracy"] == local["accuracy"]
    assert remote["report"]["checkpoint"] == f"{gcs}/pipeline/student"   # a URL stays a URL
    assert remote["config"]["teachers"]["robust"]["workdir"] == f"{gcs}/pipeline/teacher"
    assert sorted(remote["export"]) == sorted(local["export"])
    for key in local["export"]:
        np.testing.assert_array_equal(remote["export"][key], local["export"][key])
    # Everything landed in the bucket, nothing in a local directory named 'gs:'.
    names = paths.listdir(f"{gcs}/pipeline/student")
    assert {"checkpoints", "config.json", "metrics.jsonl", "evaluation"} <= set(names)
    assert paths.listdir(f"{gcs}/pipeline/student/evaluation") == [
        "evaluation.json", "evaluation.md", "robust_accuracy_vs_eps.png"]
    assert any(n.startswith("events.out.tfevents") for n in paths.listdir(f"{gcs}/pipeline/teacher/tensorboard"))
    assert not os.path.exists(os.path.join(ROOT, "gs:")) and not os.path.exists("gs:")


def _wait_for_checkpoint(proc, workdir, timeout=300):
    """Until the first step is committed (on GCS Orbax writes into `<step>/` and commits it last)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if paths.listdir(paths.join(workdir, "checkpoints")):
            ckpt = checkpoints.Checkpointer(workdir, read_only=True, async_save=False)
            committed = ckpt.latest_step() is not None
            ckpt.close()
            if committed:
                return
        if proc.poll() is not None:
            raise AssertionError(f"run ended before its first checkpoint:\n{proc.stderr.read()[-3000:]}")
        time.sleep(0.3)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.slow
def test_kill_9_on_gcs_resumes_to_the_uninterrupted_result(gcs, tmp_path):
    epochs, total = 3, 3 * (1437 // 32)
    args = {"train.epochs": epochs, "train.num_devices": 1}
    reference = str(tmp_path / "reference")
    loop.train(tiny_config(**args), reference)

    workdir = f"{gcs}/killed"
    env = dict(os.environ)   # the same devices as this process, whose run is the reference
    proc = subprocess.Popen([sys.executable, "-m", "sa_mdrad_jax", "train", f"--config={TINY_CONFIG}",
                             *(f"--config.{k}={v}" for k, v in args.items()), f"--workdir={workdir}"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_checkpoint(proc, workdir)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    stopped_at = checkpoints.Checkpointer(workdir, read_only=True).latest_step()
    assert stopped_at is not None and stopped_at < total   # really interrupted mid-run
    assert paths.exists(workdir_lock.lock_path(workdir))   # the killed run's lock is still there

    loop.train(tiny_config(**args), workdir)   # takes the dead process's lock over, resumes
    resumed = final_params(workdir)
    assert int(resumed["step"]) == total
    assert_trees_equal(resumed, final_params(reference))
    assert not paths.exists(workdir_lock.lock_path(workdir))


def test_lock_on_gcs_refuses_a_live_holder_and_takes_over_a_dead_one(gcs):
    workdir = f"{gcs}/locked"
    lock = workdir_lock.lock_path(workdir)
    assert lock == f"{gcs}/locked/.lock"
    workdir_lock.acquire(workdir)
    holder = json.loads(paths.read_text(lock))
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    workdir_lock.release(workdir)
    assert not paths.exists(lock)

    live = json.dumps({**holder, "pid": os.getppid()})   # another live process of this host
    paths.write_text(lock, live)
    with pytest.raises(workdir_lock.WorkdirLockedError, match=f"process {os.getppid()} on host"):
        workdir_lock.acquire(workdir)
    assert paths.read_text(lock) == live   # the holder's lock is left alone

    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    paths.write_text(lock, json.dumps({**holder, "pid": finished.pid}))   # its process has died
    workdir_lock.acquire(workdir)
    assert json.loads(paths.read_text(lock))["pid"] == os.getpid()
    workdir_lock.release(workdir)
    assert not paths.exists(lock)


def test_fashion_mnist_idx_files_read_from_gcs(gcs, tmp_path):
    from sa_mdrad_jax import data
    from sa_mdrad_jax.data import fashion_mnist as fm
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("test", 20)):
        images_name, labels_name = fm.FILES[split]
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for name, payload in ((images_name, (0x803).to_bytes(4, "big") + n.to_bytes(4, "big")
                               + (28).to_bytes(4, "big") * 2 + images.tobytes()),
                              (labels_name, (0x801).to_bytes(4, "big") + n.to_bytes(4, "big") + labels.tobytes())):
            (tmp_path / name).write_bytes(payload)
            paths.write_bytes(f"{gcs}/fmnist/{name}", payload)
    for split in ("train", "test"):
        local = data.load_split("fashion_mnist", split, data_dir=str(tmp_path))
        remote = data.load_split("fashion_mnist", split, data_dir=f"{gcs}/fmnist")
        np.testing.assert_array_equal(remote[0], local[0])
        np.testing.assert_array_equal(remote[1], local[1])
        assert len(remote[1]) == (30 if split == "train" else 20)


def test_grid_markers_and_results_on_gcs(gcs, tmp_path):
    """A grid whose root and results are in gs://: done markers, evaluations, metrics, tables."""
    def make(root, results):
        return {"name": "g", "root": root, "results": results, "datasets": ["digits"], "students": ["resnet_tiny"],
                "methods": ["pgd_at"], "seeds": [0, 1], "overrides": {}, "teachers": {},
                "base_config": lambda m, d, s: tiny_config(),
                "evaluation": {"attacks": ("clean", "pgd20"), "n_points": 10, "eps": 0.1, "batch_size": 10,
                               "seed": 0, "curve_eps": (0.0, 0.1)}}

    def fake_train(config, workdir):   # the storage is under test here, not training
        w = writers.MetricWriter(workdir, tensorboard=False)
        w.write(1, "eval", {"accuracy": 0.5 + config.seed / 10, "epoch": 1})
        w.close()
        return {"step": 1}

    def fake_evaluate(workdir, *, attack_names, n_points, eps, batch_size, seed, curve_eps, out_dir, **_):
        acc = 0.9 if workdir.endswith("seed0") else 0.8
        record = {"model": {"name": "resnet_tiny"}, "step": 1, "dataset": "digits", "n_points": n_points,
                  "eps": eps, "seed": seed, "accuracy": {a: acc for a in attack_names},
                  "curve": {str(e): acc for e in curve_eps}, "checkpoint": workdir}
        from sa_mdrad_jax.evaluate import robustness
        robustness.write_reports(record, out_dir)
        return record

    tables = {}
    for where, base in (("local", str(tmp_path)), ("gcs", f"{gcs}/grid")):
        g = make(paths.join(base, "runs"), paths.join(base, "results"))
        grid.run_grid(g, train_fn=fake_train, evaluate_fn=fake_evaluate, log=lambda m: None)
        tables[where] = paths.read_text(paths.join(base, "results", "tables.md"))
        run = paths.join(base, "runs", "digits", "resnet_tiny", "pgd_at", "seed1")
        assert json.loads(paths.read_text(paths.join(run, grid.DONE_FILE)))["final"]["step"] == 1
        assert grid.is_finished(run, grid.run_config(g, grid.expand(g)[1]))
        assert paths.listdir(paths.join(base, "results", "evaluations")) == [
            "digits_resnet_tiny_pgd_at_seed0.json", "digits_resnet_tiny_pgd_at_seed1.json"]
        assert "digits_resnet_tiny_eps.png" in paths.listdir(paths.join(base, "results"))
    assert tables["gcs"] == tables["local"] and "85.00 ± 7.07" in tables["gcs"]
