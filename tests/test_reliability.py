"""Nothing lost, nothing silent: validation of every number, the workdir lock, corrupt checkpoints,
the divergence guard, and the messages of the failure paths."""
from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest

from sa_mdrad_jax import checkpoints, cli, config as config_lib, workdir_lock
from sa_mdrad_jax.evaluate import robustness
from sa_mdrad_jax.train import loop
from util import ROOT, TINY_CONFIG, assert_trees_equal, final_params, snapshot, tiny_config

# Five steps an epoch (1437 // 256) on one device: two epochs give checkpoints at steps 5 and 10.
FAST = {"train.batch_size": 256, "train.num_devices": 1, "train.epochs": 2, "eval.batch_size": 360}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished two-epoch run with checkpoints at steps 5 and 10 (never modified: tests copy it)."""
    workdir = str(tmp_path_factory.mktemp("reliability") / "run")
    loop.train(tiny_config(**FAST), workdir)
    assert sorted(checkpoints.Checkpointer(workdir, read_only=True).manager.all_steps()) == [5, 10]
    return workdir


def _copy(trained, tmp_path, name="run") -> str:
    target = str(tmp_path / name)
    shutil.copytree(trained, target)
    return target


def _truncate_an_array(workdir: str, step: int) -> None:
    """Cuts the largest data file of a step's state to 1000 bytes (an interrupted copy or a full disk)."""
    files = glob.glob(os.path.join(workdir, "checkpoints", str(step), "state", "**", "d", "*"), recursive=True)
    with open(max(files, key=os.path.getsize), "r+b") as f:
        f.truncate(1000)


# ----------------------------------------------------------------------------------- validation

@pytest.mark.parametrize("override, field", [
    ({"train.epochs": 0}, "train.epochs"),
    ({"train.epochs": -3}, "train.epochs"),
    ({"optim.lr": float("nan")}, "optim.lr"),
    ({"optim.lr": float("inf")}, "optim.lr"),
    ({"optim.lr": -0.1}, "optim.lr"),
    ({"eval.batch_size": 0}, "eval.batch_size"),
    ({"train.max_steps": -1}, "train.max_steps"),
    ({"checkpoint.keep": 0}, "checkpoint.keep"),
    ({"eval.robust_eps": float("nan")}, "eval.robust_eps"),
    ({"train.max_param_abs": float("nan")}, "train.max_param_abs"),
])
def test_bad_numbers_are_refused_before_anything_is_written(tmp_path, override, field):
    (tmp_path / "config.json").write_text('{"the": "finished run\'s config"}')
    before = snapshot(tmp_path)
    with pytest.raises(config_lib.ConfigError) as exc:
        loop.train(tiny_config(**override), str(tmp_path))
    msg = str(exc.value)
    assert field in msg and "must be" in msg and repr(next(iter(override.values()))) in msg
    assert snapshot(tmp_path) == before


def test_method_numbers_and_unused_attack_names_are_checked():
    config = config_lib.distill_config("pgd_at")
    config.dataset.name, config.model.name = "digits", "resnet_tiny"
    for key, value in (("method.eps", float("inf")), ("method.eps", 0.0), ("method.steps", 0),
                       ("method.step_size", float("nan"))):
        bad = ml_collections.ConfigDict(config.to_dict())
        node, leaf = bad, key.split(".")
        node[leaf[0]][leaf[1]] = value
        with pytest.raises(config_lib.ConfigError, match=key.replace(".", r"\.")):
            config_lib.validate(bad)
    # A typo in the robust-evaluation attack is an error even while robust evaluation is off.
    config = tiny_config(**{"eval.robust_attack": "pgd2O", "eval.robust_points": 0})
    with pytest.raises(config_lib.ConfigError, match="'pgd2O'.*pgd20"):
        config_lib.validate(config)


def test_evaluate_checks_every_attack_name_before_running_any(monkeypatch):
    ran = []
    monkeypatch.setattr(robustness, "robust_accuracy", lambda *a, **k: ran.append(a[1]) or 1.0)
    x, y = np.zeros((4, 8, 8, 3), np.float32), np.zeros(4, np.int32)
    with pytest.raises(config_lib.ConfigError, match="'pgd2O'"):
        robustness.evaluate_model("any-model", {}, x, y, attack_names=("clean", "fgsm", "pgd2O"), curve_eps=())
    assert ran == []


@pytest.mark.parametrize("n", [0, -5])
def test_evaluate_refuses_n_points_below_one(trained, tmp_path, capsys, n):
    with pytest.raises(config_lib.ConfigError, match=f"n_points must be a positive number of test points; got {n}"):
        robustness.evaluate_checkpoint(trained, attack_names=("clean",), n_points=n, curve_eps=(),
                                       out_dir=str(tmp_path / "ev"))
    assert not (tmp_path / "ev").exists()
    with pytest.raises(SystemExit) as exc:
        cli.run(["sa-mdrad", "evaluate", f"--workdir={trained}", f"--n_points={n}"])
    assert exc.value.code == 2 and "--n_points must be a positive integer" in capsys.readouterr().err


def test_evaluate_says_when_n_points_is_clamped(trained, tmp_path):
    said = []
    record = robustness.evaluate_checkpoint(trained, attack_names=("clean",), n_points=5000, curve_eps=(),
                                            out_dir=None, log=said.append)
    assert record["n_points"] == 360
    assert said == ["note: n_points=5000 is more than the 360 digits test points; evaluating all 360."]


# ----------------------------------------------------------------------------------- workdir lock

def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(workdir, **holder):
    os.makedirs(workdir, exist_ok=True)
    path = workdir_lock.lock_path(str(workdir))
    with open(path, "w") as f:
        json.dump(holder, f)
    return path


def test_a_live_holder_refuses_a_second_writer_in_process(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(tmp_path, pid=sleeper.pid, host=socket.gethostname(), started=time.time(),
                    command="sa-mdrad train --workdir=x")
        before = snapshot(tmp_path)
        with pytest.raises(workdir_lock.WorkdirLockedError) as exc:
            loop.train(tiny_config(**FAST), str(tmp_path))
        assert f"process {sleeper.pid} on host {socket.gethostname()}" in str(exc.value)
        assert snapshot(tmp_path) == before
    finally:
        sleeper.kill()
        sleeper.wait()


def test_stale_locks_are_taken_over_and_released(tmp_path):
    here = socket.gethostname()
    path = _write_lock(tmp_path, pid=_dead_pid(), host=here)          # same host, process gone
    assert workdir_lock.try_acquire(str(tmp_path)) is None
    assert json.load(open(path))["pid"] == os.getpid()
    assert workdir_lock.try_acquire(str(tmp_path)) is None             # re-entrant for its holder
    workdir_lock.release(str(tmp_path))
    assert os.path.exists(path)
    workdir_lock.release(str(tmp_path))
    assert not os.path.exists(path)
    # Another host: its pid means nothing here; a fresh heartbeat holds, an old one is stale.
    path = _write_lock(tmp_path, pid=1, host="elsewhere-node-7")
    holder = workdir_lock.try_acquire(str(tmp_path))
    assert holder is not None and holder["host"] == "elsewhere-node-7"
    old = time.time() - workdir_lock.STALE_AFTER_S - 5
    os.utime(path, (old, old))
    assert workdir_lock.try_acquire(str(tmp_path)) is None
    workdir_lock.release(str(tmp_path))
    assert not os.path.exists(path)


def test_a_second_cli_run_is_refused_before_it_loads_anything(tmp_path):
    workdir = str(tmp_path / "run")
    workdir_lock.acquire(workdir)      # this test process is the first writer
    try:
        before = snapshot(workdir)
        t0 = time.perf_counter()
        env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
        proc = subprocess.run([sys.executable, "-m", "sa_mdrad_jax", "train", f"--config={TINY_CONFIG}",
                               "--config.train.max_steps=1", f"--workdir={workdir}"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert f"is in use by process {os.getpid()} on host {socket.gethostname()}" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert snapshot(workdir) == before          # nothing written by the refused run
        print(f"refused in {time.perf_counter() - t0:.1f} s")
    finally:
        workdir_lock.release(workdir)


# ------------------------------------------------------------------------------ corrupt checkpoints

@pytest.mark.parametrize("damage", ["truncated_array", "half_written"])
def test_reading_a_damaged_step_names_it_without_a_traceback(trained, tmp_path, capsys, damage):
    workdir = _copy(trained, tmp_path)
    if damage == "truncated_array":
        _truncate_an_array(workdir, 10)
    else:
        shutil.rmtree(os.path.join(workdir, "checkpoints", "10", "state"))
    with pytest.raises(checkpoints.CheckpointCorruptError) as exc:
        checkpoints.load_variables(workdir)          # teachers, evaluate, export, init_from
    msg = str(exc.value)
    assert f"Checkpoint step 10 in {workdir}/checkpoints is incomplete or corrupt (" in msg
    assert ("array " if damage == "truncated_array" else "item state missing") in msg
    assert "Other steps there: [5]" in msg
    with pytest.raises(SystemExit) as exc:
        cli.run(["sa-mdrad", "evaluate", f"--workdir={workdir}", "--attacks=clean", "--n_points=10"])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and err.startswith("error: Checkpoint step 10 in") and "Traceback" not in err


def test_restore_skips_a_truncated_newest_step_and_moves_it_aside(trained, tmp_path):
    workdir = _copy(trained, tmp_path)
    _truncate_an_array(workdir, 10)
    damaged = snapshot(os.path.join(workdir, "checkpoints", "10"))
    ckpt = checkpoints.Checkpointer(workdir, async_save=False)
    raw = ckpt.restore_raw(5)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), raw)
    said = []
    state, meta, step = ckpt.restore_intact(abstract, log=said.append)
    assert step == 5 and meta["step"] == 5
    assert_trees_equal(state, raw)
    assert ckpt.latest_step() == 5 and sorted(ckpt.manager.all_steps()) == [5]
    moved = os.path.join(workdir, "corrupt_checkpoints", "10")
    assert snapshot(moved) == damaged            # moved whole, nothing deleted
    assert len(said) == 1 and "step 10" in said[0] and "Resuming from step 5" in said[0] and moved in said[0]
    ckpt.close()


def test_when_no_step_restores_nothing_is_moved(trained, tmp_path):
    workdir = _copy(trained, tmp_path)
    for step in (5, 10):
        _truncate_an_array(workdir, step)
    before = snapshot(workdir)
    ckpt = checkpoints.Checkpointer(workdir, read_only=True, async_save=False)
    raw_meta = ckpt.manager.item_metadata(5)["state"]
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), raw_meta)
    with pytest.raises(checkpoints.CheckpointCorruptError, match="No checkpoint step .* restores completely"):
        ckpt.restore_intact(abstract)
    assert snapshot(workdir) == before


def test_resume_falls_back_past_a_half_written_step_to_the_same_result(trained, tmp_path, capsys):
    workdir = _copy(trained, tmp_path)
    shutil.rmtree(os.path.join(workdir, "checkpoints", "10", "state"))   # e.g. a copy cut short
    result = loop.train(tiny_config(**FAST), workdir)
    assert result["step"] == 10
    err = capsys.readouterr().err
    assert "Checkpoint step 10 in" in err and "Resuming from step 5" in err
    assert os.path.isdir(os.path.join(workdir, "corrupt_checkpoints", "10", "meta"))   # kept for the user
    assert_trees_equal(final_params(workdir, 10), final_params(trained, 10))           # bit-identical


def test_resuming_with_another_method_names_both_and_the_way_out(trained, tmp_path):
    workdir = _copy(trained, tmp_path)
    before = snapshot(workdir)
    config = config_lib.distill_config("pgd_at")
    for key, value in tiny_config(**FAST).items():
        if key not in ("method", "teachers"):
            config[key] = value
    config.eval.robust_points = 0
    with pytest.raises(checkpoints.CheckpointMismatchError) as exc:
        loop.train(config, workdir)
    msg = str(exc.value)
    assert "'natural'" in msg and "'pgd_at'" in msg and f"--config.train.init_from={workdir}" in msg
    assert "partial_restore" not in msg
    assert snapshot(workdir) == before


def test_resuming_with_other_settings_says_which_and_keeps_the_previous_config(trained, tmp_path, capsys):
    workdir = _copy(trained, tmp_path)
    shutil.rmtree(os.path.join(workdir, "checkpoints", "10"))          # stopped after epoch 1 (step 5)
    with open(os.path.join(workdir, "config.json")) as f:
        trained_with = f.read()
    # A longer run, other logging or evaluation batches: nothing to say (they do not change the weights' origin).
    assert config_lib.changed_keys(json.loads(trained_with), tiny_config(
        **{**FAST, "train.epochs": 3, "log.every_steps": 1, "eval.batch_size": 7})) == []
    loop.train(tiny_config(**{**FAST, "optim.lr": 0.01, "seed": 3}), workdir)
    err = capsys.readouterr().err
    assert f"Resuming {workdir} at step 5 with other settings" in err and "optim.lr, seed" in err
    with open(os.path.join(workdir, "config.step5.json")) as f:
        assert f.read() == trained_with                                # the history is kept
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["optim"]["lr"] == 0.01


# ---------------------------------------------------------------------------------- divergence guard

def test_diverged_weights_are_never_saved_and_the_sane_checkpoint_survives_keep_1(trained, tmp_path):
    workdir = _copy(trained, tmp_path)
    shutil.rmtree(os.path.join(workdir, "checkpoints", "10"))          # the run stopped after epoch 1
    sane = final_params(workdir, 5)
    # lr 1e3 from step 5 on: the loss grows to ~1e10 and |w| to ~1e7 by step 10, all finite.
    config = tiny_config(**{**FAST, "optim.lr": 1e3, "checkpoint.keep": 1, "checkpoint.best_metric": "",
                            "log.every_steps": 1})
    with pytest.raises(loop.DivergenceError) as exc:
        loop.train(config, workdir)
    msg = str(exc.value)
    assert "diverged by step 10" in msg and "train.max_loss at step" in msg
    assert "the epoch's mean training loss is" in msg and "(train.max_loss=1e+06)" in msg
    assert f"last sane checkpoint, step 5 in {workdir}/checkpoints, is kept" in msg
    ckpt = checkpoints.Checkpointer(workdir, read_only=True)
    assert sorted(ckpt.manager.all_steps()) == [5]
    assert_trees_equal(final_params(workdir, 5), sane)
    # The weight bound on its own: a sane loss but one weight beyond train.max_param_abs (or not finite).
    for bad_value, expected in ((2e6, "largest |parameter| is 2e+06"), (np.nan, "some weights are not finite")):
        params = jax.tree.map(np.array, sane["params"])
        jax.tree.leaves(params)[0].flat[0] = bad_value
        state = type("State", (), {"params": params, "batch_stats": sane["batch_stats"]})()
        with pytest.raises(loop.DivergenceError, match=expected):
            loop._check_sane(config, state, 10, [2.3, 1.0, None], ckpt)


# -------------------------------------------------------------------------------------- messages

def test_sigterm_during_start_up_exits_cleanly_with_a_message(tmp_path, monkeypatch, capsys):
    class Unhandled(Exception):
        pass

    def unhandled(signum, frame):   # what the default action (death by -15) would have been
        raise Unhandled()

    def prepare(config):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
        raise AssertionError("start-up went on after SIGTERM")

    previous = signal.signal(signal.SIGTERM, unhandled)
    monkeypatch.setattr(loop, "prepare", prepare)
    try:
        with pytest.raises(SystemExit) as exc:
            loop.train(tiny_config(**FAST), str(tmp_path / "run"))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert exc.value.code == 143
    assert "SIGTERM before training started" in capsys.readouterr().err
    assert os.listdir(tmp_path / "run") == []           # lock released, nothing written


@pytest.mark.torch
def test_pickle_refusal_names_the_global_it_found(tmp_path):
    torch = pytest.importorskip("torch", reason="needs the optional torch extra")
    from sa_mdrad_jax import interop

    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    path = tmp_path / "evil.pt"
    torch.save({"linear.weight": torch.zeros(2), "extra": Payload()}, path)
    with pytest.raises(interop.TorchCheckpointError, match=r"it pickles posix\.system"):
        interop.read_state_dict(str(path))


def test_every_process_is_refused_when_process_0_is(tmp_path):
    """Multi-process runs: process 0 holds the lock; when it is refused, the broadcast makes the other
    processes raise too (instead of waiting at a collective for it), and they take no lock themselves."""
    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    with open(workdir_lock.lock_path(workdir), "w") as f:
        json.dump({"pid": os.getppid(), "host": socket.gethostname(), "started": 0, "command": "other run"}, f)
    with pytest.raises(workdir_lock.WorkdirLockedError, match="other run"):   # process 0
        with workdir_lock.hold(workdir, enabled=True, broadcast=lambda refused: refused):
            pass
    with pytest.raises(workdir_lock.WorkdirLockedError, match="process 0 of this run was refused"):   # process 1
        with workdir_lock.hold(workdir, enabled=False, broadcast=lambda refused: True):
            pass
    with workdir_lock.hold(workdir, enabled=False, broadcast=lambda refused: False):   # process 0 got it
        assert json.load(open(workdir_lock.lock_path(workdir)))["command"] == "other run"   # untouched
