"""The baselines inside the generic step: BN modes during the attack, 8 devices == 1, one trace.

A two-layer MLP with BatchNorm stands in for the networks (8x8 digits, batch 16): everything the
step does to BN statistics, teachers and method state is exercised, at a fraction of the compile
time of a convolutional network.
"""
from __future__ import annotations

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sa_mdrad_jax import data
from sa_mdrad_jax.config import base_config, method_config
from sa_mdrad_jax.methods import METHODS, StepContext, make_method
from sa_mdrad_jax.train import distill_step, schedules, step as step_lib
from sa_mdrad_jax.train.loop import _initial_state
from util import assert_trees_equal

TEACHER_NAMES = ("natural", "robust")   # sorted, as a `teachers` block orders them


class TinyNet(nn.Module):
    """x -> Dense -> BatchNorm -> ReLU -> Dense; feats['final'] is the hidden layer as a 1x1 map."""
    num_classes: int = 10
    hidden: int = 12
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.Dense(self.hidden)(x.reshape(x.shape[0], -1))
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9, axis_name=self.bn_axis_name)(h)
        h = nn.relu(h)
        return nn.Dense(self.num_classes)(h), {"final": h[:, None, None, :]}


@functools.lru_cache(maxsize=None)
def _digits():
    return data.load_split("digits", "train", image_size=8)


def _method(name: str):
    base, *terms = name.split("+")
    cfg = method_config(base)
    if base == "sa_mdrad":   # the options that add machinery: attack through the teachers, MTARD branch balance
        cfg.update(attack_loss="kl_fused_adv", branch_weights="mtard")
    for term in terms:
        cfg[term].enabled = True
    return make_method(cfg, TEACHER_NAMES)


def _tx():
    optim = base_config().optim
    return schedules.make_optimizer(optim, schedules.make_schedule(optim, 10, 1))


def _teachers():
    teachers = [TinyNet(hidden=h) for h in (10, 14)]
    tv = tuple(t.init(jax.random.PRNGKey(10 + k), jnp.zeros((1, 8, 8, 3)), train=False)
               for k, t in enumerate(teachers))
    return teachers, tv


# --- BN mode during the attack -----------------------------------------------------------------
def _attack(method, bn_mode=None, steps=3):
    images, labels = _digits()
    x, y = jnp.asarray(images[:16], jnp.float32) / 255.0, jnp.asarray(labels[:16])
    student = TinyNet()
    variables = student.init(jax.random.PRNGKey(0), x, train=False)
    teachers, tv = _teachers()
    teach = lambda z: jnp.stack([t.apply(v, z, train=False)[0] for t, v in zip(teachers, tv)])
    start = x + 0.001 * jax.random.normal(jax.random.PRNGKey(1), x.shape)
    student_at = distill_step.attack_student(student, variables["params"], bn_mode or method.attack_bn)
    return distill_step.adversarial_examples(
        method, student_at, x, y, start, variables["batch_stats"], teachers_at=teach, t_nat=teach(x),
        ctx=StepContext.make(), eps=8 / 255, step_size=2 / 255, steps=steps), variables["batch_stats"]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_only_ard_and_iad_move_bn_statistics_during_the_attack(name):
    method = _method(name)
    (x_adv, after), before = _attack(method)
    moved = not np.allclose(after["BatchNorm_0"]["mean"], before["BatchNorm_0"]["mean"])
    assert moved == (name in ("ard", "iad")), name
    assert method.attack_bn == ("train" if name in ("ard", "iad") else "eval")
    if moved:
        # Every attack forward is one momentum update (ARD's `net.train()` attack): 3 steps != 1 step.
        (_, after_one), _ = _attack(method, steps=1)
        assert not np.allclose(after_one["BatchNorm_0"]["mean"], after["BatchNorm_0"]["mean"])


def test_batch_stats_no_update_uses_batch_statistics_but_keeps_running_ones():
    method = _method("pgd_at")
    (x_eval, _), _ = _attack(method, "eval")
    (x_bs, after), before = _attack(method, "batch_stats_no_update")
    assert_trees_equal(after, before)
    assert not np.allclose(x_eval, x_bs)   # the attack saw batch statistics, not running ones


# --- the step: 8 devices == 1, one trace ---------------------------------------------------------
def _run(name, devices, n_steps=2, trace_counter=None):
    images, labels = _digits()
    mesh = step_lib.make_mesh(jax.devices()[:devices])
    method = _method(name)
    student = TinyNet(bn_axis_name=step_lib.DATA)
    teachers, tv = _teachers()
    tx = _tx()
    connectors = ()
    if method.connectors:
        connectors = distill_step.make_connectors(
            distill_step.feature_shapes(student, (8, 8, 3)), [distill_step.feature_shapes(t, (8, 8, 3)) for t in teachers])
    state = _initial_state(student, tx, (8, 8, 3), 0, connectors, method)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    state, tv = jax.device_put((state, tv), replicated)
    fn = distill_step.make_distill_step(method, student, teachers, tx, mesh, eps=8 / 255, step_size=2 / 255,
                                        steps=2, connectors=connectors, pad=2, flip=False)
    if trace_counter is not None:
        fn = trace_counter(fn)
    step = jax.jit(fn, donate_argnums=(0,))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(step_lib.DATA))
    metrics = []
    for i in range(n_steps):
        rows = slice(i * 16, (i + 1) * 16)
        batch = {"image": jax.device_put(images[rows], sharding), "label": jax.device_put(labels[rows], sharding)}
        # A new epoch (IGDM ramp, LR decay count) changes only array values: no retrace.
        ctx = StepContext.make(epoch=i, lr_decays=i)
        state, m = step(state, batch, jax.random.PRNGKey(100 + i), tv, ctx)
        metrics.append(jax.device_get(m))
    return jax.device_get(state), metrics


@pytest.mark.parametrize("name", ["ard", "adaad+igdm", "mtard", "sa_mdrad"])
def test_step_on_8_devices_equals_1_device_and_traces_once(name):
    one, m1 = _run(name, 1)
    chex.clear_trace_counter()
    eight, m8 = _run(name, 8, trace_counter=functools.partial(chex.assert_max_traces, n=1))
    assert_trees_equal(one.params, eight.params, atol=1e-5)
    assert_trees_equal(one.batch_stats, eight.batch_stats, atol=1e-5)   # attack-time updates (ARD) too
    assert_trees_equal(one.extra, eight.extra, atol=1e-5)               # MTARD's balance state
    for a, b in zip(m1, m8):
        assert set(a) == set(b)
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-4, err_msg=k)
    if name in ("mtard", "sa_mdrad"):
        assert float(one.extra["method"]["w_nat"]) != 0.5 and int(one.extra["method"]["started"]) == 1
    if name == "adaad+igdm":
        assert "igdm_sum" in m1[0] and float(m1[1]["igdm_kl_sum"]) > 0


def test_trades_reference_bn_order_adds_one_clean_statistics_update_and_nothing_else():
    """bn_forwards=3 (the reference's S(x), S(x'), S(x)): same loss and parameters as 2 forwards,
    running statistics one more momentum update with the clean batch: m3 = 0.9·m2 + 0.1·mean(h(x))."""
    images, labels = _digits()
    mesh = step_lib.make_mesh(jax.devices()[:1])
    student, tx = TinyNet(bn_axis_name=step_lib.DATA), _tx()
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(step_lib.DATA))
    batch = {"image": jax.device_put(images[:16], sharding), "label": jax.device_put(labels[:16], sharding)}
    out = {}
    for n in (2, 3):
        cfg = method_config("trades")
        cfg.bn_forwards = n
        method = make_method(cfg, ())
        state = jax.device_put(_initial_state(student, tx, (8, 8, 3), 0, (), method),
                               jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
        fn = distill_step.make_distill_step(method, student, (), tx, mesh, eps=8 / 255, step_size=2 / 255,
                                            steps=2, augment=False)
        new, metrics = jax.jit(fn)(state, batch, jax.random.PRNGKey(0), (), StepContext.make())
        out[n] = jax.device_get((state, new, metrics))
    (before, two, m2), (_, three, m3) = out[2], out[3]
    np.testing.assert_allclose(m3["loss_sum"], m2["loss_sum"], rtol=1e-6)
    chex.assert_trees_all_close(three.params, two.params, rtol=1e-5, atol=1e-7)
    x = jnp.asarray(images[:16], jnp.float32) / 255.0
    h = x.reshape(16, -1) @ before.params["Dense_0"]["kernel"] + before.params["Dense_0"]["bias"]
    expected = 0.9 * two.batch_stats["BatchNorm_0"]["mean"] + 0.1 * h.mean(0)
    np.testing.assert_allclose(three.batch_stats["BatchNorm_0"]["mean"], expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(three.batch_stats["BatchNorm_0"]["mean"], two.batch_stats["BatchNorm_0"]["mean"])
    with pytest.raises(ValueError, match="bn_forwards"):
        cfg.bn_forwards = 4
        make_method(cfg, ())
