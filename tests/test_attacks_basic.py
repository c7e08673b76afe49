"""Losses, FGSM and the evaluation PGD family: hand-computed losses, validity (S1), accuracy drop
on a classifier trained on real data, S7, any-iterate tracking, restarts, determinism, one compile."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sa_mdrad_jax import attacks
from sa_mdrad_jax.attacks import iterative, losses
from sa_mdrad_jax.attacks.fgsm import fgsm
from sa_mdrad_jax.attacks.iterative import pgd_attack, pgd_run

EPS = 8 / 255
PGD_FAMILY = ("fgsm", "pgd20", "pgd20_trades", "cw_inf_30", "cw_inf_50x10")
ALL_NAMED = {n: attacks.NAMED[n] for n in PGD_FAMILY + ("apgd_ce", "apgd_t")}


# ------------------------------------------------------------------------------ shared helpers

def accuracy(logits_fn, x, y) -> float:
    return float(jnp.mean(jnp.argmax(logits_fn(x), -1) == y))


def assert_valid(x_adv, x, eps):
    """S1: finite, in the ε-ball (+1e-6) and in [0, 1]."""
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert bool(jnp.all(jnp.isfinite(x_adv)))
    assert float(jnp.max(jnp.abs(x_adv - x))) <= eps + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


def linear_model(key, shape=(6, 6, 3), classes=10):
    w = jax.random.normal(key, (int(np.prod(shape)), classes))
    return lambda x: x.reshape(x.shape[0], -1) @ w


def band_model(lo: float, hi: float, surrogate_target: float | None = None):
    """2-class model on the mean pixel s: misclassified (class 1) iff lo < s < hi. Its gradient is
    a surrogate's: s itself (ascent pushes s up) or −(s − target)² (ascent pulls s to target); the
    value of the surrogate is removed with stop_gradient, so the decision does not depend on it."""
    def logits_fn(x):
        s = x.reshape(x.shape[0], -1).mean(1)
        sur = s if surrogate_target is None else -(s - surrogate_target) ** 2
        z1 = jnp.where((s > lo) & (s < hi), 1.0, -1.0) + sur - jax.lax.stop_gradient(sur)
        return jnp.stack([jnp.zeros_like(z1), z1], axis=-1)
    return logits_fn


@pytest.fixture(scope="module")
def digits(digits_natural):
    """The shared natural digits MLP (util.digits_mlp): inputs standardised per pixel inside the
    model, non-robust enough that attacks at ε = 8/255 separate clearly (clean ≈ 97 %,
    FGSM ≈ 62 %, PGD-20 ≈ 46 %); all 360 test points."""
    return digits_natural.logits_fn, digits_natural.x_test, digits_natural.y_test


# ------------------------------------------------------------------------------ losses

Z = jnp.array([[1.0, 3.0, 0.5, 2.0],      # true class 0 is 3rd; sorted 3, 2, 1, 0.5
               [4.0, 1.0, 2.0, 0.0]])     # true class 0 is top; sorted 4, 2, 1, 0
Y = jnp.array([0, 0])


def test_cross_entropy_and_kl_hand_computed():
    ce = [np.log(np.exp([1, 3, 0.5, 2]).sum()) - 1, np.log(np.exp([4, 1, 2, 0]).sum()) - 4]
    np.testing.assert_allclose(losses.cross_entropy(Z, Y), ce, rtol=1e-6)
    p = jnp.array([[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    q = np.asarray(jax.nn.softmax(Z))
    kl = [0.5 * np.log(0.5 / q[0, 0]) + 0.5 * np.log(0.5 / q[0, 1]), np.sum(0.25 * np.log(0.25 / q[1]))]
    np.testing.assert_allclose(losses.kl_div(p, Z), kl, rtol=1e-5)
    np.testing.assert_allclose(losses.kl_div(jax.nn.softmax(Z), Z), [0, 0], atol=1e-6)


def test_cw_margin_sign_and_kappa():
    # min(max_{i≠y} z_i − z_y, κ): example 0 misclassified by 2, example 1 correct by 2.
    np.testing.assert_allclose(losses.cw_margin(Z, Y), [0.0, -2.0])
    np.testing.assert_allclose(losses.cw_margin(Z, Y, kappa=1.0), [1.0, -2.0])
    np.testing.assert_allclose(losses.cw_margin(Z, Y, kappa=50.0), [2.0, -2.0])
    # Equals the IAD/TRADES cwloss −clamp(z_y − max_other + κ, min=0) plus the constant κ.
    iad = -np.maximum(np.array([1 - 3, 4 - 2]) + 50.0, 0.0)
    np.testing.assert_allclose(losses.cw_margin(Z, Y, kappa=50.0) - 50.0, iad)


def test_dlr_hand_computed():
    np.testing.assert_allclose(losses.dlr(Z, Y), [2 / (3 - 1), -2 / (4 - 1)], rtol=1e-6)
    t = jnp.array([1, 2])
    np.testing.assert_allclose(losses.dlr_targeted(Z, Y, t),
                               [2 / (3 - 0.5 * (1 + 0.5)), -2 / (4 - 0.5 * (1 + 0))], rtol=1e-6)
    # Scale invariance of DLR (its point): the same values for 10·z.
    np.testing.assert_allclose(losses.dlr(10 * Z, Y), losses.dlr(Z, Y), rtol=1e-5)


# ------------------------------------------------------------------------------ validity (S1)

@pytest.mark.parametrize("name", sorted(ALL_NAMED))
def test_named_attacks_stay_in_ball_and_box(name):
    x = jax.random.uniform(jax.random.PRNGKey(0), (4, 6, 6, 3))
    x = x.at[0].set(0.0).at[1].set(1.0)            # points on the box faces
    y = jnp.array([0, 1, 2, 3])
    x_adv = jax.jit(functools.partial(ALL_NAMED[name], linear_model(jax.random.PRNGKey(1))))(
        x, y, jax.random.PRNGKey(2))
    assert_valid(x_adv, x, EPS)


@pytest.mark.parametrize("loss,init", [("ce", "none"), ("cw", "uniform"), ("dlr", "normal"),
                                       (losses.cross_entropy, "uniform")])
def test_pgd_attack_options_stay_valid(loss, init):
    x = jax.random.uniform(jax.random.PRNGKey(0), (3, 6, 6, 3))
    y = jnp.array([0, 1, 2])
    f = linear_model(jax.random.PRNGKey(1))
    attack = jax.jit(lambda x, y, k: pgd_attack(f, x, y, k, eps=4 / 255, step_size=1 / 255,
                                                steps=3, loss=loss, init=init, restarts=2))
    assert_valid(attack(x, y, jax.random.PRNGKey(2)), x, 4 / 255)


def test_unknown_loss_is_rejected():
    with pytest.raises(ValueError, match="Unknown attack loss"):
        iterative.resolve_loss("hinge")


# ------------------------------------------------------------------------------ real classifier

def test_attacks_reduce_accuracy_of_trained_classifier(digits):
    f, x, y = digits
    clean = accuracy(f, x, y)
    assert clean > 0.9
    key = jax.random.PRNGKey(3)
    acc = {name: accuracy(f, jax.jit(functools.partial(a, f))(x, y, key), y)
           for name, a in ((n, attacks.NAMED[n]) for n in PGD_FAMILY)}
    # Measured: clean 0.97, fgsm 0.62, the PGD family 0.45–0.49.
    assert acc["fgsm"] <= clean - 0.2, acc
    for name in ("pgd20", "pgd20_trades", "cw_inf_30", "cw_inf_50x10"):
        assert acc[name] <= clean - 0.35, (name, acc)
    assert acc["pgd20"] <= acc["fgsm"] - 0.05, acc               # S7, with room to spare
    assert acc["cw_inf_50x10"] <= acc["cw_inf_30"] + 0.01, acc    # restarts do not hurt
    # S10: uniform noise in the ball costs far less than PGD.
    noise = jax.random.uniform(jax.random.PRNGKey(4), x.shape, minval=-EPS, maxval=EPS)
    assert accuracy(f, jnp.clip(x + noise, 0, 1), y) >= clean - 0.05


def test_fgsm_is_one_signed_step_of_eps():
    f = linear_model(jax.random.PRNGKey(1))
    x = jnp.full((2, 6, 6, 3), 0.5)
    y = jnp.array([0, 1])
    g = jax.grad(lambda z: jnp.sum(losses.cross_entropy(f(z), y)))(x)
    np.testing.assert_allclose(jax.jit(functools.partial(fgsm, f))(x, y, jax.random.PRNGKey(0)),
                               x + EPS * jnp.sign(g), atol=1e-7)


# ------------------------------------------------------------------------------ any iterate

def test_pgd_returns_an_intermediate_misclassified_iterate():
    # s = 0.5 rises by 0.03 a step: 0.53, 0.56 (misclassified), 0.59, ..., 0.7 (clipped, correct).
    f = band_model(0.545, 0.575)
    x = jnp.full((1, 2, 2, 1), 0.5)
    y = jnp.array([0])
    run = jax.jit(lambda k: pgd_run(f, x, y, k, eps=0.2, step_size=0.03, steps=12,
                                    loss_fn=losses.cross_entropy, init="none"))(jax.random.PRNGKey(0))
    assert int(jnp.argmax(f(run.x_last), -1)[0]) == 0              # the last iterate is correct
    np.testing.assert_allclose(run.x_last, 0.7, atol=1e-6)
    assert bool(run.broken[0])
    np.testing.assert_allclose(run.x_adv, 0.56, atol=1e-6)         # the first misclassified one
    x_adv = jax.jit(lambda k: pgd_attack(f, x, y, k, eps=0.2, step_size=0.03, steps=12,
                                         init="none"))(jax.random.PRNGKey(0))
    assert int(jnp.argmax(f(x_adv), -1)[0]) == 1


def test_restarts_keep_the_restart_that_breaks_the_point():
    # Misclassified only near s = 0.5 + ε·0.9: one step of ε from a uniform start lands there only
    # when the start is within 0.1ε below it. A single restart often misses, ten restarts rarely do;
    # points broken by some restart must come back misclassified.
    f = band_model(0.5 + 0.08, 0.5 + 0.1)
    x = jnp.full((64, 1, 1, 1), 0.5)
    y = jnp.zeros(64, jnp.int32)
    kw = dict(eps=0.1, step_size=0.01, steps=1, init="uniform")
    one = jax.jit(lambda k: pgd_attack(f, x, y, k, **kw))(jax.random.PRNGKey(0))
    ten = jax.jit(lambda k: pgd_attack(f, x, y, k, restarts=10, **kw))(jax.random.PRNGKey(0))
    broken1 = jnp.argmax(f(one), -1) == 1
    broken10 = jnp.argmax(f(ten), -1) == 1
    assert bool(jnp.all(broken10 | ~broken1))        # restart 0 is the same run: never lose it
    assert int(broken10.sum()) > int(broken1.sum())
    assert_valid(ten, x, 0.1)


# ------------------------------------------------------------------------------ determinism, jit

def test_same_key_same_output_and_one_compile():
    f = linear_model(jax.random.PRNGKey(1))
    x = jax.random.uniform(jax.random.PRNGKey(0), (4, 6, 6, 3))
    y = jnp.array([0, 1, 2, 3])
    traces = []

    @jax.jit
    def attack(x, y, key):
        traces.append(1)
        return iterative.cw_inf_50x10(f, x, y, key)

    a = attack(x, y, jax.random.PRNGKey(5))
    b = attack(x, y, jax.random.PRNGKey(5))
    c = attack(x + 0.01, y, jax.random.PRNGKey(6))
    assert len(traces) == 1
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
