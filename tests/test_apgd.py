"""APGD / APGD-T: checkpoints, the step-halving rule on constructed loss traces, any-iterate
bookkeeping, accuracy drop on a trained classifier, target choice, determinism and one compile."""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sa_mdrad_jax import attacks
from sa_mdrad_jax.attacks import apgd, losses
from sa_mdrad_jax.attacks.apgd import apgd_ce, apgd_run, apgd_t, checkpoints, count_increases, halve_step
from sa_mdrad_jax.attacks.iterative import pgd20
from test_attacks_basic import accuracy, assert_valid, band_model, linear_model

EPS = 8 / 255


@pytest.fixture(scope="module")
def digits(digits_natural):
    """The shared natural digits MLP (tests/util.py: digits_mlp), all 360 test points."""
    return digits_natural.logits_fn, digits_natural.x_test, digits_natural.y_test


# ------------------------------------------------------------------------------ checkpoints

def test_checkpoints_match_the_reference_for_100_iterations():
    # The reference checks after 22, 41, ..., 99 completed iterations; w_0 = 0 is the start and
    # no check happens there, so it is not in the list.
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(1000) == [220, 410, 570, 700, 800, 870, 930, 990]


@pytest.mark.parametrize("n", [5, 10, 37, 250])
def test_checkpoints_are_increasing_and_follow_the_recursion(n):
    w = checkpoints(n)
    assert w[0] == math.ceil(0.22 * n - 1e-9) and all(a < b for a, b in zip(w, w[1:]))
    assert w[-1] <= n


# ------------------------------------------------------------------------------ step halving

def _trace(increases: int, window: int) -> jnp.ndarray:
    """A loss trace [window+1, 1] whose first `increases` steps go up and the rest go down."""
    up = np.arange(increases + 1, dtype=np.float32)
    down = increases - np.arange(1, window - increases + 1, dtype=np.float32) * 0.1
    return jnp.asarray(np.concatenate([up, down]))[:, None]


def test_halving_condition_a_oscillation():
    tr = _trace(10, 22)                       # 10 of 22 steps increased: 10 ≤ 0.75·22
    assert int(count_increases(tr)[0]) == 10
    best, best_last = jnp.array([10.0]), jnp.array([0.0])   # improved since the last check
    assert bool(halve_step(count_increases(tr), 22, best, best_last, jnp.array([True]))[0])
    assert bool(halve_step(count_increases(tr), 22, best, best_last, jnp.array([False]))[0])


def test_halving_condition_b_no_improvement_without_previous_halving():
    n = count_increases(_trace(20, 22))       # 20 > 16.5: no oscillation
    best = jnp.array([3.0, 3.0, 3.0, 3.0])
    best_last = jnp.array([3.0, 5.0, 3.0, 2.0])
    halved_last = jnp.array([False, False, True, False])
    got = halve_step(jnp.repeat(n, 4), 22, best, best_last, halved_last)
    # stalled & not halved -> halve (equal or worse best); halved last time -> no; improved -> no.
    np.testing.assert_array_equal(got, [True, True, False, False])


def test_halving_neither_condition():
    n = count_increases(_trace(17, 22))
    assert not bool(halve_step(n, 22, jnp.array([2.0]), jnp.array([1.0]), jnp.array([False]))[0])


def test_halving_threshold_is_inclusive_as_in_the_reference():
    # window 16 (57 -> 70... the third window at N = 100): 12 = 0.75·16 increases still halves.
    for inc, expect in [(12, True), (13, False)]:
        n = count_increases(_trace(inc, 16))
        got = halve_step(n, 16, jnp.array([2.0]), jnp.array([1.0]), jnp.array([True]))
        assert bool(got[0]) == expect


# ------------------------------------------------------------------------------ any iterate

def decoy_model(lo: float, hi: float, target: float):
    """3 classes on the mean pixel s, true class 0. Misclassified (z_1 = 0.1) iff lo < s < hi, but
    the CE there (0.74) is below the CE near `target` (|s − target| < 0.05: z_1 = z_2 = −0.1, CE
    1.03, correct), so the best-loss point is NOT the misclassified one. Gradients come from the
    surrogate −(s − target)² (value removed by stop_gradient): ascent pulls s towards target."""
    def logits_fn(x):
        s = x.reshape(x.shape[0], -1).mean(1)
        sur = -(s - target) ** 2
        sur = sur - jax.lax.stop_gradient(sur)
        band, near = (s > lo) & (s < hi), jnp.abs(s - target) < 0.05
        z1 = jnp.where(band, 0.1, jnp.where(near, -0.1, -3.0)) + sur
        z2 = jnp.where(band, -10.0, jnp.where(near, -0.1, -3.0)) + sur
        return jnp.stack([jnp.zeros_like(s), z1, z2], axis=-1)
    return logits_fn


def test_apgd_returns_a_misclassified_iterate_even_if_the_last_is_not():
    # One pixel at 0.5, ε = 0.1: the start is 0.4 or 0.6 and the step 2ε crosses the ball, so
    # iterate 0 or 1 sits at 0.4 (misclassified); momentum then brings s to 0.5, near the target
    # 0.53, the best-loss point, where the run settles (correctly classified).
    f = decoy_model(0.39, 0.41, target=0.53)
    x = jnp.full((8, 1, 1, 1), 0.5)
    y = jnp.zeros(8, jnp.int32)
    run = jax.jit(lambda k: apgd_run(f, x, y, k, eps=0.1, n_iter=30, loss_fn=losses.cross_entropy))(
        jax.random.PRNGKey(0))
    assert bool(jnp.all(jnp.argmax(f(run.x_last), -1) == 0))        # last iterates are correct
    assert bool(jnp.all(run.loss > 0.9))     # the best loss was reached near 0.53, not in the band
    assert bool(jnp.all(run.broken))
    np.testing.assert_allclose(run.x_adv, 0.4, atol=1e-6)
    x_adv = jax.jit(lambda k: apgd_ce(f, x, y, k, eps=0.1, n_iter=30))(jax.random.PRNGKey(0))
    assert bool(jnp.all(jnp.argmax(f(x_adv), -1) == 1))


# ------------------------------------------------------------------------------ real classifier

def test_apgd_reduces_accuracy_of_trained_classifier(digits):
    f, x, y = digits
    clean = accuracy(f, x, y)
    key = jax.random.PRNGKey(3)
    acc_pgd = accuracy(f, jax.jit(functools.partial(pgd20, f))(x, y, key), y)
    acc_ce = accuracy(f, jax.jit(functools.partial(apgd_ce, f))(x, y, key), y)
    x_t = jax.jit(functools.partial(apgd_t, f, n_iter=50, n_target_classes=3))(x, y, key)
    assert_valid(x_t, x, EPS)
    acc_t = accuracy(f, x_t, y)
    # Measured: clean 0.97, pgd20 0.46, apgd_ce 0.43, apgd_t (3 targets × 50) about the same.
    assert acc_ce <= clean - 0.35 and acc_t <= clean - 0.35, (clean, acc_ce, acc_t)
    assert acc_ce <= acc_pgd + 0.01, (acc_pgd, acc_ce)               # S8 direction


def test_apgd_t_targets_the_second_largest_clean_logit_first():
    # Two pixels a, b at 0.5; clean logits [2, 1.5, 0, −1]: class 1 (2nd largest, driven by a) can
    # overtake class 0 within ε = 0.1, class 2 (3rd, constant) never can. With one target class
    # the point is broken only if that target is class 1.
    def f(z):
        a, b = z[:, 0, 0, 0], z[:, 0, 1, 0]
        return jnp.stack([jnp.full_like(a, 2.0), 1.5 + 10 * (a - 0.5), jnp.zeros_like(a),
                          -1 + 10 * (b - 0.5)], axis=-1)

    x = jnp.full((1, 1, 2, 1), 0.5)
    y = jnp.array([0])
    x_adv = apgd_t(f, x, y, jax.random.PRNGKey(0), eps=0.1, n_iter=10, n_target_classes=1)
    assert int(jnp.argmax(f(x_adv), -1)[0]) == 1
    assert_valid(x_adv, x, 0.1)
    with pytest.raises(ValueError, match="n_target_classes"):
        apgd_t(f, x, y, jax.random.PRNGKey(0), eps=0.1, n_target_classes=4)


# ------------------------------------------------------------------------------ determinism, jit

def test_apgd_same_key_same_output_and_one_compile():
    f = linear_model(jax.random.PRNGKey(1))
    x = jax.random.uniform(jax.random.PRNGKey(0), (4, 6, 6, 3))
    y = jnp.array([0, 1, 2, 3])
    traces = []

    @jax.jit
    def attack(x, y, key):
        traces.append(1)
        return apgd_ce(f, x, y, key, n_iter=20, restarts=2), apgd_t(f, x, y, key, n_iter=20,
                                                                    n_target_classes=3)

    a = attack(x, y, jax.random.PRNGKey(5))
    b = attack(x, y, jax.random.PRNGKey(5))
    attack(x + 0.01, y, jax.random.PRNGKey(6))
    assert len(traces) == 1
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
        assert_valid(u, x, EPS)


def test_registry():
    assert {"apgd_ce", "apgd_t"} <= set(attacks.NAMED)
    assert attacks.NAMED["apgd_ce"] is apgd.apgd_ce and attacks.NAMED["apgd_t"] is apgd.apgd_t
