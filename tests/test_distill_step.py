"""The generic adversarial/distillation step: data-parallel equivalence and a single compile."""
from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sa_mdrad_jax import data, models
from sa_mdrad_jax.config import base_config, method_config
from sa_mdrad_jax.methods import make_method
from sa_mdrad_jax.train import schedules, step as step_lib
from sa_mdrad_jax.train.distill_step import init_connectors, make_connectors, make_distill_step
from sa_mdrad_jax.train.state import create_train_state
from util import assert_trees_equal

TEACHERS = ("resnet_tiny", "wrn_tiny")


def _final_shape(model, image_shape):
    x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    return jax.eval_shape(lambda x: model.init_with_output(jax.random.PRNGKey(0), x, train=False)[0], x)[1]["final"].shape


def _setup(method_name, mesh, n_steps, images, labels, trace_counter=None):
    method = make_method(method_config(method_name))
    image_shape = images.shape[1:]
    student = models.get_model("resnet_tiny", num_classes=10, normalize="digits", bn_axis_name=step_lib.DATA)
    teachers = [models.get_model(n, num_classes=10, normalize="digits") for n in TEACHERS]
    teacher_vars = tuple(t.init(jax.random.PRNGKey(10 + k), jnp.zeros((1, *image_shape)), train=False)
                         for k, t in enumerate(teachers))
    optim = base_config().optim
    tx = schedules.make_optimizer(optim, schedules.make_schedule(optim, 10, 1))
    state = create_train_state(student, tx, image_shape, seed=0)
    connectors = ()
    if method.connectors:
        connectors = make_connectors(None, [_final_shape(t, image_shape) for t in teachers])
        conn = init_connectors(jax.random.PRNGKey(5), connectors, _final_shape(student, image_shape))
        state = state.replace(extra={"connectors": conn, "connector_opt_state": tx.init(conn["params"])})
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    state, teacher_vars = jax.device_put((state, teacher_vars), replicated)  # as the loop places them
    step_fn = make_distill_step(method, student, teachers, tx, mesh, eps=8 / 255, step_size=2 / 255, steps=3,
                                connectors=connectors, pad=2, flip=False)
    if trace_counter is not None:
        step_fn = trace_counter(step_fn)
    step = jax.jit(step_fn, donate_argnums=(0,))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(step_lib.DATA))
    metrics = []
    for i in range(n_steps):
        rows = slice(i * 16, (i + 1) * 16)
        batch = {"image": jax.device_put(images[rows], sharding), "label": jax.device_put(labels[rows], sharding)}
        state, m = step(state, batch, jax.random.PRNGKey(100 + i), teacher_vars, 1.0)
        metrics.append(jax.device_get(m))
    return jax.device_get(state), metrics


@pytest.mark.parametrize("method", ["pgd_at", "sa_mdrad"])
def test_step_on_8_devices_equals_1_device(method):
    images, labels = data.load_split("digits", "train", image_size=8)
    one, m1 = _setup(method, step_lib.make_mesh(jax.devices()[:1]), 2, images, labels)
    eight, m8 = _setup(method, step_lib.make_mesh(jax.devices()[:8]), 2, images, labels)
    assert_trees_equal(one.params, eight.params, atol=1e-5)
    assert_trees_equal(one.batch_stats, eight.batch_stats, atol=1e-5)
    assert_trees_equal(one.extra, eight.extra, atol=1e-5)   # connectors (SA-MDRAD) too
    for a, b in zip(m1, m8):
        assert set(a) == set(b)
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-4, err_msg=k)
    if method == "sa_mdrad":
        assert {"kl_adv_sum", "kl_nat_sum", "feat_adv_sum", "teacher_correct_adv", "all_wrong_adv_sum",
                "w_adv_sum", "w_adv_entropy_sum"} <= set(m1[0])
        np.testing.assert_allclose(m1[0]["w_adv_sum"].sum(), m1[0]["count"], rtol=1e-5)  # Σ_k w = 1 per sample
        assert float(m1[0]["feat_adv_sum"]) > 0


def test_step_compiles_once_per_run():
    images, labels = data.load_split("digits", "train", image_size=8)
    counter = functools.partial(chex.assert_max_traces, n=1)
    chex.clear_trace_counter()
    _setup("sa_mdrad", step_lib.make_mesh(jax.devices()[:2]), 3, images, labels, trace_counter=counter)


def test_unrolled_attack_loop_trains_bit_identical_states():
    """The PGD loop's unroll (full on CPU by default, `attacks.pgd.resolve_unroll`) does not change
    the computation: PGD-AT trains the same parameters, BN statistics and metrics, bit for bit, with
    the loop rolled and unrolled under the suite's XLA settings (most optimizations off; fully optimized, fusion differs and states
    drift at the float-rounding level -- BENCHMARKS.md)."""
    from sa_mdrad_jax.attacks.pgd import loop_unroll
    images, labels = data.load_split("digits", "train", image_size=8)
    mesh = step_lib.make_mesh(jax.devices()[:1])
    with loop_unroll("rolled"):
        rolled, m_rolled = _setup("pgd_at", mesh, 2, images, labels)
    with loop_unroll("unrolled"):
        unrolled, m_unrolled = _setup("pgd_at", mesh, 2, images, labels)
    for a, b in ((rolled.params, unrolled.params), (rolled.batch_stats, unrolled.batch_stats)):
        jax.tree.map(np.testing.assert_array_equal, a, b)
    assert jax.tree.leaves(rolled.params) and m_rolled[0].keys() == m_unrolled[0].keys()
    jax.tree.map(np.testing.assert_array_equal, m_rolled, m_unrolled)
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(m_rolled[0]), jax.tree.leaves(m_rolled[1])))
