"""The natural-training step and loop: data parallelism, resume, schedules, optimiser."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sa_mdrad_jax import config as config_lib, data, models
from sa_mdrad_jax.config import base_config
from sa_mdrad_jax.evaluate.clean import clean_accuracy
from sa_mdrad_jax.methods import natural_loss
from sa_mdrad_jax.train import input as input_lib, loop, schedules, step as step_lib, writers
from sa_mdrad_jax.train.state import create_train_state
from util import assert_trees_equal, final_params, tiny_config


def _run_steps(mesh, images, labels, n_steps=3, sync_bn=True):
    model = models.get_model("resnet_tiny", num_classes=10, normalize="digits",
                             bn_axis_name=step_lib.DATA if sync_bn else None)
    optim = base_config().optim
    tx = schedules.make_optimizer(optim, schedules.make_schedule(optim, 10, 1))
    state = create_train_state(model, tx, images.shape[1:], seed=0)
    step = jax.jit(step_lib.make_train_step(functools.partial(natural_loss, model), tx, mesh, pad=2,
                                            sync_bn=sync_bn), donate_argnums=(0,))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(step_lib.DATA))
    all_metrics = []
    for i in range(n_steps):
        rows = slice(i * 16, (i + 1) * 16)
        batch = {"image": jax.device_put(images[rows], sharding), "label": jax.device_put(labels[rows], sharding)}
        state, metrics = step(state, batch, jax.random.PRNGKey(100 + i))
        all_metrics.append(jax.device_get(metrics))
    return jax.device_get(state), all_metrics


def test_step_on_8_devices_equals_1_device():
    images, labels = data.load_split("digits", "train", image_size=8)
    one, m1 = _run_steps(step_lib.make_mesh(jax.devices()[:1]), images, labels)
    eight, m8 = _run_steps(step_lib.make_mesh(jax.devices()[:8]), images, labels)
    assert one.step == 3
    assert_trees_equal(one.params, eight.params, atol=1e-5)
    assert_trees_equal(one.batch_stats, eight.batch_stats, atol=1e-5)
    for a, b in zip(m1, m8):
        assert a["count"] == b["count"] == 16
        assert a["correct"] == b["correct"]
        np.testing.assert_allclose(a["loss_sum"], b["loss_sum"], rtol=1e-5)
    # The parameters did move: equality is not the trivial "nothing happened".
    init = create_train_state(models.get_model("resnet_tiny", num_classes=10, normalize="digits"),
                              optax.sgd(0.1), images.shape[1:], seed=0)
    moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), one.params, init.params)
    assert max(jax.tree.leaves(moved)) > 1e-3


def test_unsynced_bn_statistics_are_averaged_and_differ_from_global():
    images, labels = data.load_split("digits", "train", image_size=8)
    synced, _ = _run_steps(step_lib.make_mesh(jax.devices()[:8]), images, labels, n_steps=1)
    local, _ = _run_steps(step_lib.make_mesh(jax.devices()[:8]), images, labels, n_steps=1, sync_bn=False)
    # Running means are linear in the batch means, so their average over devices equals the
    # global one; running variances are not (per-device variances miss the between-device spread).
    means = lambda t: [v for p, v in jax.tree_util.tree_leaves_with_path(t) if "mean" in jax.tree_util.keystr(p)]
    variances = lambda t: [v for p, v in jax.tree_util.tree_leaves_with_path(t) if "var" in jax.tree_util.keystr(p)]
    np.testing.assert_allclose(np.asarray(means(synced.batch_stats)[0]), np.asarray(means(local.batch_stats)[0]),
                               atol=1e-5)
    diff = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
               for a, b in zip(variances(synced.batch_stats), variances(local.batch_stats)))
    assert diff > 1e-6


def test_epoch_order_is_a_per_device_permutation_and_batches_come_from_own_block():
    mesh = step_lib.make_mesh(jax.devices()[:4])
    n, m = 40, 10
    images = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1).repeat(3, -1)
    split = input_lib.put_split(mesh, images, np.arange(n, dtype=np.int32), drop_remainder=True)
    assert split.per_device == m
    order0 = np.asarray(input_lib.epoch_order(jax.random.PRNGKey(0), jnp.int32(0), mesh=mesh, per_device=m))
    order1 = np.asarray(input_lib.epoch_order(jax.random.PRNGKey(0), jnp.int32(1), mesh=mesh, per_device=m))
    blocks0 = order0.reshape(4, m)
    for block in blocks0:
        assert sorted(block) == list(range(m))
    assert not np.array_equal(blocks0[0], blocks0[1])          # devices draw different orders
    assert not np.array_equal(order0, order1)                  # and a new one each epoch
    batch = jax.jit(functools.partial(input_lib.gather_batch, mesh=mesh, per_device_batch=5))(
        split, jnp.asarray(order0), 1)
    labels = np.asarray(batch["label"]).reshape(4, 5)
    for d in range(4):  # device d's rows come from its own block, in its own order
        np.testing.assert_array_equal(labels[d], d * m + blocks0[d, 5:10])
    np.testing.assert_array_equal(np.asarray(batch["image"])[:, 0, 0, 0], np.asarray(batch["label"]))


def test_evaluation_counts_every_example_once_on_any_device_count():
    config = tiny_config()
    state = create_train_state(models.get_model("resnet_tiny", num_classes=10, normalize="digits"),
                               optax.sgd(0.1), (8, 8, 3), seed=3)
    model_config = loop.model_config_of(config, 10)
    r1 = clean_accuracy(model_config, state.variables, "digits", image_size=8, batch_size=64,
                        mesh=step_lib.make_mesh(jax.devices()[:1]))
    r8 = clean_accuracy(model_config, state.variables, "digits", image_size=8, batch_size=64,
                        mesh=step_lib.make_mesh(jax.devices()[:8]))
    assert r1["count"] == r8["count"] == 360          # 360 is not a multiple of 64 or of 8*8
    assert r1["accuracy"] == pytest.approx(r8["accuracy"], abs=1e-6)
    assert r1["loss"] == pytest.approx(r8["loss"], rel=1e-5)


def test_num_devices_picks_the_mesh_and_rejects_what_this_process_lacks():
    assert jax.device_count() == 8                     # conftest simulates 8 CPU devices
    assert loop.prepare(tiny_config()).mesh.devices.size == 8
    setup = loop.prepare(tiny_config(**{"train.num_devices": 2}))
    assert list(setup.mesh.devices.flat) == jax.devices()[:2] and setup.per_device_batch == 16
    for bad in (-1, 9):
        with pytest.raises(config_lib.ConfigError, match=f"train.num_devices={bad}: accepted are 0"):
            loop.prepare(tiny_config(**{"train.num_devices": bad}))


def test_piecewise_schedule_decays_at_epoch_boundaries():
    optim = base_config().optim
    optim.update(lr=0.1, schedule="piecewise", boundaries=(2, 3), decay=0.1)
    sched = schedules.make_schedule(optim, steps_per_epoch=10, total_epochs=4)
    assert float(sched(19)) == pytest.approx(0.1)
    assert float(sched(20)) == pytest.approx(0.01)
    assert float(sched(30)) == pytest.approx(0.001)
    optim.update(schedule="cosine", warmup_epochs=1.0)
    sched = schedules.make_schedule(optim, steps_per_epoch=10, total_epochs=4)
    assert float(sched(0)) == 0.0 and float(sched(10)) == pytest.approx(0.1)
    assert float(sched(40)) == pytest.approx(0.0, abs=1e-8)


def test_sgd_weight_decay_is_coupled_like_pytorch():
    optim = base_config().optim
    optim.update(lr=0.1, momentum=0.9, weight_decay=0.01)
    tx = schedules.make_optimizer(optim, optax.constant_schedule(0.1))
    theta, g = jnp.array([1.0, -2.0]), jnp.array([0.5, 0.5])
    opt_state = tx.init(theta)
    # torch.optim.SGD: d = g + wd·θ; buf = d (first step), then buf = 0.9·buf + d; θ -= lr·buf
    d1 = g + 0.01 * theta
    upd, opt_state = tx.update(g, opt_state, theta)
    theta1 = theta + upd
    np.testing.assert_allclose(theta1, theta - 0.1 * d1, rtol=1e-6)
    upd, _ = tx.update(g, opt_state, theta1)
    d2 = g + 0.01 * theta1
    np.testing.assert_allclose(theta1 + upd, theta1 - 0.1 * (0.9 * d1 + d2), rtol=1e-6)


def test_loop_learns_checkpoints_and_rerun_is_a_no_op(tmp_path):
    config = tiny_config(**{"train.epochs": 3})
    result = loop.train(config, str(tmp_path))
    assert result["step"] == 3 * (1437 // 32)
    assert result["test_accuracy"] > 0.3            # chance is 0.1
    evals = writers.read_metrics(str(tmp_path), "eval")
    assert [r["epoch"] for r in evals] == [1, 2, 3]
    assert (tmp_path / "config.json").exists()
    again = loop.train(config, str(tmp_path))          # finished run: resumes at the end, trains nothing
    assert again["step"] == result["step"]
    assert again["test_accuracy"] == pytest.approx(result["test_accuracy"])
    assert len(writers.read_metrics(str(tmp_path), "eval")) == 3
    params = final_params(str(tmp_path))
    assert set(params) >= {"params", "batch_stats", "opt_state", "step", "key"}


def test_teacher_config_trains_on_cifar10_through_the_tfds_loader(tmp_path):
    """The CIFAR-10 teacher config, unchanged but for size, runs the real TFDS read path (mocked)."""
    import tensorflow_datasets as tfds
    from sa_mdrad_jax.config import load_config_file
    from util import ROOT
    config = load_config_file(f"{ROOT}/configs/teacher_cifar10.py:resnet_tiny")
    config.train.update(batch_size=16, max_steps=3)
    config.eval.batch_size = 32
    config.log.update(progress=False, tensorboard=False)
    with tfds.testing.mock_data(num_examples=40):
        result = loop.train(config, str(tmp_path / "run"))
    assert result["step"] == 3
    meta = final_params(str(tmp_path / "run"))
    assert int(meta["step"]) == 3
    evals = writers.read_metrics(str(tmp_path / "run"), "eval")
    assert evals and 0.0 <= evals[-1]["test_accuracy"] <= 1.0
