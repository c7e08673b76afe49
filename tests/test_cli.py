"""The command line: overrides, clear errors that lose nothing, kill/preemption resume, multi-process."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from sa_mdrad_jax import checkpoints, cli
from util import ROOT, TINY_CONFIG, assert_trees_equal, final_params, run_cli, snapshot

TEACHER_CONFIG = os.path.join(ROOT, "configs", "teacher_cifar10.py")


def _cli_error(capsys, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        cli.run(["sa-mdrad", *args])
    return exc.value.code, capsys.readouterr().err


def test_unknown_config_key_lists_valid_keys_and_writes_nothing(tmp_path, capsys):
    workdir = tmp_path / "run"
    code, err = _cli_error(capsys, "train", f"--config={TEACHER_CONFIG}", "--config.model.widht=0.5",
                           f"--workdir={workdir}")
    assert code == 2
    assert "model.widht" in err and "width" in err and "normalize" in err
    assert not workdir.exists()


def test_unknown_command_lists_commands(capsys):
    code, err = _cli_error(capsys, "distil")
    assert code == 2 and "train" in err and "quickstart" in err


@pytest.mark.parametrize("override, expected", [
    ("--config.model.name=resnet19", ["Unknown model 'resnet19'", "resnet18", "wrn34_10"]),
    ("--config.dataset.name=cifar11", ["Unknown dataset 'cifar11'", "cifar10", "digits", "tiny_imagenet"]),
    ("--config.optim.schedule=linear", ["Unknown lr schedule", "cosine", "piecewise"]),
])
def test_unknown_names_list_valid_ones_and_leave_files_intact(tmp_path, capsys, override, expected):
    (tmp_path / "notes.txt").write_text("keep me")
    before = snapshot(tmp_path)
    code, err = _cli_error(capsys, "train", f"--config={TEACHER_CONFIG}", override, f"--workdir={tmp_path}")
    assert code == 1
    for text in expected:
        assert text in err
    assert snapshot(tmp_path) == before


def test_missing_dataset_offline_names_data_dir_and_prepare_command(tmp_path, capsys):
    empty = tmp_path / "tfds"
    empty.mkdir()
    code, err = _cli_error(capsys, "train", f"--config={TEACHER_CONFIG}", "--config.model.name=resnet_tiny",
                           f"--config.dataset.data_dir={empty}", f"--workdir={tmp_path / 'run'}")
    assert code == 1
    assert str(empty) in err and "sa-mdrad prepare --dataset=cifar10" in err
    assert list(empty.iterdir()) == []


def test_override_is_applied_and_resolved_config_written(tmp_path):
    run_cli("train", f"--config={TINY_CONFIG}", "--config.train.max_steps=3", "--config.model.width=0.5",
            f"--workdir={tmp_path}", devices=1)
    resolved = json.loads((tmp_path / "config.json").read_text())
    assert resolved["model"]["width"] == 0.5 and resolved["train"]["max_steps"] == 3
    ckpt = checkpoints.Checkpointer(str(tmp_path), read_only=True)
    assert ckpt.latest_step() == 3
    assert ckpt.read_meta()["model"]["width"] == 0.5


def test_checkpoint_of_another_architecture_is_refused_untouched(tmp_path):
    run_cli("train", f"--config={TINY_CONFIG}", "--config.train.max_steps=2", f"--workdir={tmp_path}", devices=1)
    before = snapshot(tmp_path)
    proc = run_cli("train", f"--config={TINY_CONFIG}", "--config.model.name=vgg_tiny", f"--workdir={tmp_path}",
                   devices=1, check=False)
    assert proc.returncode == 1
    assert "holds a different model" in proc.stderr and "resnet_tiny" in proc.stderr and "vgg_tiny" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert snapshot(tmp_path) == before


def test_shape_check_names_mismatching_keys():
    expected = {"params": {"a": np.zeros((3, 3)), "b": np.zeros(2)}}
    actual = {"params": {"a": np.zeros((3, 4)), "c": np.zeros(2)}}
    with pytest.raises(checkpoints.CheckpointMismatchError) as exc:
        checkpoints.check_shapes(expected, actual, where="somewhere")
    msg = str(exc.value)
    assert "['params']['b']" in msg and "['params']['c']" in msg and "(3, 4) vs (3, 3)" in msg


def test_nan_loss_stops_with_clear_error_and_keeps_last_checkpoint(tmp_path):
    run_cli("train", f"--config={TINY_CONFIG}", "--config.train.max_steps=2", f"--workdir={tmp_path}", devices=1)
    before = snapshot(tmp_path / "checkpoints")
    proc = run_cli("train", f"--config={TINY_CONFIG}", "--config.optim.lr=1e30", "--config.log.every_steps=1",
                   f"--workdir={tmp_path}", devices=1, check=False)
    assert proc.returncode == 1
    assert "loss became" in proc.stderr and "(step 2)" in proc.stderr
    assert snapshot(tmp_path / "checkpoints") == before


def _wait_for_checkpoint(proc, workdir, timeout=300):
    ckpt_dir = os.path.join(workdir, "checkpoints")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.isdir(ckpt_dir) and any(d.isdigit() for d in os.listdir(ckpt_dir)):
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended before its first checkpoint:\n{proc.stderr.read()[-3000:]}")
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


def _start(workdir, *extra):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    return subprocess.Popen([sys.executable, "-m", "sa_mdrad_jax", "train", f"--config={TINY_CONFIG}",
                             "--config.train.epochs=4", *extra, f"--workdir={workdir}"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The final state of the 4-epoch CLI run both interruption tests must reproduce."""
    reference = tmp_path_factory.mktemp("reference")
    run_cli("train", f"--config={TINY_CONFIG}", "--config.train.epochs=4", f"--workdir={reference}", devices=1)
    return final_params(str(reference))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, how, uninterrupted):
    total = 4 * (1437 // 32)
    interrupted = tmp_path / "interrupted"
    proc = _start(interrupted)
    _wait_for_checkpoint(proc, interrupted)
    proc.send_signal(signal.SIGKILL if how == "sigkill" else signal.SIGTERM)
    proc.wait(timeout=120)
    assert proc.returncode == (-signal.SIGKILL if how == "sigkill" else 143), proc.stderr.read()[-2000:]
    stopped_at = checkpoints.Checkpointer(str(interrupted), read_only=True).latest_step()
    assert stopped_at is not None and stopped_at < total  # really interrupted mid-run

    run_cli("train", f"--config={TINY_CONFIG}", "--config.train.epochs=4", f"--workdir={interrupted}", devices=1)
    resumed = final_params(str(interrupted))
    assert int(resumed["step"]) == int(uninterrupted["step"]) == total
    assert_trees_equal(resumed, uninterrupted)  # exactly, on CPU


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_match_one_process_with_the_same_mesh(tmp_path):
    args = [f"--config={TINY_CONFIG}", "--config.train.max_steps=2", "--config.train.batch_size=16",
            "--config.checkpoint.async_save=False"]
    single = tmp_path / "single"
    run_cli("train", *args, f"--workdir={single}", devices=2)

    multi = tmp_path / "multi"
    port = _free_port()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    procs = [subprocess.Popen(
        [sys.executable, "-m", "sa_mdrad_jax", "train", *args, f"--workdir={multi}",
         "--config.distributed.initialize=True", f"--config.distributed.coordinator_address=localhost:{port}",
         "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    a, b = final_params(str(single)), final_params(str(multi))
    assert int(a["step"]) == int(b["step"]) == 2
    assert_trees_equal(a["params"], b["params"], atol=1e-6)
    assert_trees_equal(a["batch_stats"], b["batch_stats"], atol=1e-6)


def test_compilation_cache_dir_flag_sets_jax_config(tmp_path, monkeypatch, capsys):
    import jax
    before = jax.config.jax_compilation_cache_dir
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    try:
        # The flag is applied before the command runs (here: one that stops at a missing flag).
        _cli_error(capsys, "evaluate")
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "xdg" / "sa_mdrad_jax" / "jax_cache")
        _cli_error(capsys, "evaluate", f"--compilation_cache_dir={tmp_path / 'mine'}")
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "mine")
        _cli_error(capsys, "evaluate", "--compilation_cache_dir=")
        assert jax.config.jax_compilation_cache_dir is None
    finally:
        cli.configure_compilation_cache(before or "")


def test_persistent_compilation_cache_is_written_and_reused(tmp_path):
    """The suite runs without JAX's persistent cache (conftest.py); here the CLI's default cache
    ($XDG_CACHE_HOME/sa_mdrad_jax/jax_cache) is on: the first run writes its programs there and a second
    run of the same config loads them instead of compiling, with the same result."""
    env = {"JAX_ENABLE_COMPILATION_CACHE": "true", "XDG_CACHE_HOME": str(tmp_path / "xdg"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_LOGGING_LEVEL": "DEBUG"}
    cache = tmp_path / "xdg" / "sa_mdrad_jax" / "jax_cache"
    runs = []
    for name in ("first", "second"):
        proc = run_cli("train", f"--config={TINY_CONFIG}", "--config.train.max_steps=2",
                       "--config.train.epochs=1", f"--workdir={tmp_path / name}", env=env)
        runs.append(set(re.findall(r"Persistent compilation cache hit for '[^']*' with key '([^']*)'", proc.stderr)))
        if name == "first":
            written = {p.name.removesuffix("-cache") for p in cache.iterdir() if p.name.startswith("jit_")}
            assert written, f"nothing was written to {cache}"
    # The first run compiled everything; the second loaded every program the first one wrote.
    assert runs[0] == set() and runs[1] == written, (len(runs[0]), len(runs[1] ^ written))
    assert_trees_equal(final_params(str(tmp_path / "first"))["params"],
                       final_params(str(tmp_path / "second"))["params"])
