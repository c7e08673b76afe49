"""Periodic robust evaluation inside the training loop (pgd20 on a subset of the validation split)."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from sa_mdrad_jax import attacks, checkpoints, config as config_lib, models
from sa_mdrad_jax.train import loop, step as step_lib, writers
from util import tiny_config


def _robust(setup, variables, *, eps, n_points, key):
    model = models.get_model(**{**setup.model_config, "dtype": "float32"})
    robust_on = _compiled(model, setup)
    return step_lib.robust_evaluate_split(robust_on, variables, setup.eval_split, setup.eval_per_device_batch,
                                          n_points, key, eps)


_CACHE = {}


def _compiled(model, setup):
    # One compilation for every ε of this module (ε is traced).
    if "robust_on" not in _CACHE:
        _CACHE["robust_on"] = step_lib.compiled_robust_eval(model, setup.mesh, attacks.pgd20,
                                                            per_device_batch=setup.eval_per_device_batch)
    return _CACHE["robust_on"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("robust"))
    config = tiny_config(**{"train.epochs": 1, "eval.batch_size": 64, "dataset.validation_size": 287,
                             "eval.robust_points": 100, "checkpoint.best_metric": "val_robust_accuracy"})
    loop.train(config, workdir)
    return config, workdir


def test_loop_records_the_robust_accuracy_of_the_saved_model(trained):
    config, workdir = trained
    evals = writers.read_metrics(workdir, "eval")
    assert len(evals) == 1
    record = evals[0]
    # 100 points requested, batches of 64 over 8 devices: the first two batches are attacked, i.e. the first
    # 16 of each device's 40 rows (287 validation points padded to 8×40); the last device holds rows
    # 280-319 of which 7 are real, so 7×16 + 7 = 119 points.
    assert record["val_robust_count"] == 119
    assert not [k for k in record if k.startswith("test_")]   # the epoch is judged on validation only
    # Recomputed from the checkpoint with the loop's key, the number is the same.
    setup = loop.prepare(config)
    variables = jax.device_get(checkpoints.load_variables(workdir)[1])
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed + 2), 0)
    again = _robust(setup, variables, eps=8 / 255, n_points=100, key=key)
    assert again["robust_accuracy"] == pytest.approx(record["val_robust_accuracy"], abs=1e-9)


def test_robust_accuracy_is_clean_accuracy_at_zero_eps_and_falls_with_eps(trained):
    config, workdir = trained
    setup = loop.prepare(config)
    variables = jax.device_get(checkpoints.load_variables(workdir)[1])
    key = jax.random.PRNGKey(0)
    at = {eps: _robust(setup, variables, eps=eps, n_points=128, key=key)["robust_accuracy"]
          for eps in (0.0, 8 / 255, 0.3)}
    # Clean accuracy of the same points (the first two evaluation batches of every device, padding excluded).
    model = models.get_model(**{**setup.model_config, "dtype": "float32"})
    per = setup.eval_split.per_device
    images = np.asarray(jax.device_get(setup.eval_split.images)).reshape(8, per, *setup.image_shape)[:, :16]
    labels = np.asarray(jax.device_get(setup.eval_split.labels)).reshape(8, per)[:, :16]
    logits, _ = model.apply(variables, images.reshape(-1, *setup.image_shape).astype(np.float32) / 255, train=False)
    real = np.asarray(jax.device_get(setup.eval_split.mask)).reshape(8, per)[:, :16].reshape(-1)   # not padding
    clean = float(np.mean((np.argmax(logits, -1) == labels.reshape(-1))[real]))
    assert at[0.0] == pytest.approx(clean, abs=1e-9)
    assert at[8 / 255] < at[0.0]
    assert at[0.3] < at[8 / 255]


def test_best_robust_checkpoint_needs_the_robust_metric_on_every_checkpoint():
    config = tiny_config(**{"checkpoint.best_metric": "val_robust_accuracy", "dataset.validation_size": 100})
    with pytest.raises(config_lib.ConfigError, match="eval.robust_points > 0"):
        config_lib.validate(config)
    config = tiny_config(**{"eval.robust_attack": "pgd7"})
    config.eval.robust_points = 10
    with pytest.raises(config_lib.ConfigError, match="pgd20"):
        config_lib.validate(config)


def test_a_fresh_run_starts_from_the_weights_of_init_from(trained, tmp_path):
    config, workdir = trained
    source = jax.device_get(checkpoints.load_variables(workdir)[1])
    # lr 0 and no weight decay: the one step changes no parameter, so they must equal the source's.
    student = tiny_config(**{"train.max_steps": 1, "train.init_from": workdir, "optim.lr": 0.0,
                             "optim.weight_decay": 0.0, "optim.warmup_epochs": 0.0})
    loop.train(student, str(tmp_path / "student"))
    got = jax.device_get(checkpoints.load_variables(str(tmp_path / "student"))[1])
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), got["params"], source["params"])
    # Another architecture is refused by name, and nothing is trained.
    other = tiny_config(**{"train.max_steps": 1, "train.init_from": workdir, "model.name": "wrn_tiny"})
    with pytest.raises(checkpoints.CheckpointMismatchError, match="init_from"):
        loop.train(other, str(tmp_path / "other"))
    assert not checkpoints.Checkpointer(str(tmp_path / "other"), read_only=True).latest_step()
