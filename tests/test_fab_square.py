"""FAB-T and Square (L∞): validity, a real accuracy drop on the shared digits MLP, FAB's ε rule."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sa_mdrad_jax.attacks.fab import fab_t, project_linf_hyperplane_box
from sa_mdrad_jax.attacks.pgd import pgd
from sa_mdrad_jax.attacks.square import p_schedule, square, square_sizes

EPS = 8 / 255
N_EVAL = 128


@pytest.fixture(scope="module")
def model(digits_natural):
    """The shared natural digits MLP (util.digits_mlp, ~97% test accuracy), first N_EVAL test points."""
    m = digits_natural
    assert float(jnp.mean(jnp.argmax(m.logits_fn(m.x_test), -1) == m.y_test)) > 0.9
    return m.logits_fn, m.x_test[:N_EVAL], m.y_test[:N_EVAL]


def _acc(logits_fn, x, y):
    return float(jnp.mean(jnp.argmax(logits_fn(x), -1) == y))


def _assert_valid(x_adv, x, eps):
    assert bool(jnp.all(jnp.isfinite(x_adv)))
    assert float(jnp.max(jnp.abs(x_adv - x))) <= eps + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


def test_linf_projection_onto_hyperplane_in_box_is_feasible_and_minimal():
    kz, kw, kc = jax.random.split(jax.random.PRNGKey(3), 3)
    z = jax.random.uniform(kz, (64, 50))
    w = jax.random.normal(kw, (64, 50))
    c = jax.random.normal(kc, (64,))
    d = project_linf_hyperplane_box(z, w, c)
    np.testing.assert_allclose(jnp.sum(w * d, 1), c, rtol=1e-4, atol=1e-5)   # on the hyperplane
    assert float((z + d).min()) >= -1e-6 and float((z + d).max()) <= 1 + 1e-6  # in the box
    # Minimal: with a slightly smaller L∞ budget, even the best box-feasible step falls short.
    t = jnp.max(jnp.abs(d), 1) * (1 - 1e-3)
    room = jnp.where(w * jnp.sign(c)[:, None] > 0, 1 - z, z)
    reach = jnp.sum(jnp.abs(w) * jnp.minimum(t[:, None], room), 1)
    assert bool(jnp.all(reach < jnp.abs(c)))


def test_linf_projection_returns_the_box_corner_when_the_hyperplane_is_out_of_reach():
    z = jnp.full((1, 3), 0.5)
    w = jnp.array([[1.0, -2.0, 0.0]])
    d = project_linf_hyperplane_box(z, w, jnp.array([10.0]))   # max reachable w·d is 1.5
    np.testing.assert_allclose(d, [[0.5, -0.5, 0.0]])


def test_fab_t_stays_valid_and_breaks_points_like_pgd(model):
    logits_fn, x, y = model
    x_adv = fab_t(logits_fn, x, y, jax.random.PRNGKey(1), eps=EPS, n_iter=30, n_target_classes=4)
    _assert_valid(x_adv, x, EPS)
    clean, robust = _acc(logits_fn, x, y), _acc(logits_fn, x_adv, y)
    ce = lambda z: optax.softmax_cross_entropy_with_integer_labels(logits_fn(z), y)
    pgd_acc = _acc(logits_fn, pgd(ce, x, jax.random.PRNGKey(2), eps=EPS, step_size=EPS / 4, steps=50), y)
    assert robust <= clean - 0.05, (clean, robust)        # measured: 0.984 → 0.391
    assert robust <= pgd_acc + 0.02, (robust, pgd_acc)    # a min-norm attack as strong as PGD-50 here
    # Broken points carry their adversarial example; the others are returned untouched.
    broken = jnp.argmax(logits_fn(x_adv), -1) != y
    unchanged = jnp.all((x_adv == x).reshape(len(x), -1), axis=1)
    assert bool(jnp.all(broken | unchanged))


def test_fab_t_does_not_count_perturbations_larger_than_eps(model):
    logits_fn, x, y = model
    x, y = x[:32], y[:32]
    kw = dict(n_iter=20, n_target_classes=2)
    big = fab_t(logits_fn, x, y, jax.random.PRNGKey(1), eps=64 / 255, **kw)
    correct = jnp.argmax(logits_fn(x), -1) == y
    found = correct & (jnp.argmax(logits_fn(big), -1) != y)
    norms = jnp.max(jnp.abs(big - x).reshape(len(x), -1), 1)
    assert int(found.sum()) >= 10                           # FAB finds adversarial examples ...
    tiny = float(jnp.min(jnp.where(found, norms, jnp.inf))) / 4
    small = fab_t(logits_fn, x, y, jax.random.PRNGKey(1), eps=tiny, **kw)
    # ... but none within ε = (smallest norm found)/4, so every point comes back as x itself.
    np.testing.assert_array_equal(small, x)


def test_square_p_schedule_follows_the_reference():
    # AutoAttack's standard Square (resc_schedule=False): break points on the raw iteration count.
    assert p_schedule(10, 5000, 0.8) == 0.8 and p_schedule(11, 5000, 0.8) == 0.4
    assert p_schedule(500, 5000, 0.8) == 0.1 and p_schedule(2500, 5000, 0.8) == 0.8 / 64
    assert p_schedule(4999, 5000, 0.8) == 0.8 / 128 and p_schedule(1, 100, 0.8) == 0.8
    sizes = square_sizes(5000, 0.8, 32, 32)
    assert sizes[0] == 29 and sizes[-1] == 3 and np.all(np.diff(sizes) <= 0)
    # SquareAttack's default (rescale=True): as if the budget were 10 000 queries.
    assert p_schedule(500, 10000, 0.8, rescale=True) == 0.1
    assert p_schedule(9000, 10000, 0.8, rescale=True) == 0.8 / 512
    assert p_schedule(1, 100, 0.8, rescale=True) == 0.2   # i=1 of 100 acts as i'=100 of 10 000
    assert p_schedule(2500, 5000, 0.8, rescale=True) == 0.8 / 128
    sizes = square_sizes(5000, 0.8, 32, 32, rescale=True)
    assert sizes[0] == 29 and sizes[-1] == 1 and np.all(np.diff(sizes) <= 0)


def test_square_stays_valid_and_reduces_accuracy(model):
    logits_fn, x, y = model
    clean = _acc(logits_fn, x, y)
    few = square(logits_fn, x, y, jax.random.PRNGKey(1), eps=EPS, n_queries=100)
    _assert_valid(few, x, EPS)
    x_adv = square(logits_fn, x, y, jax.random.PRNGKey(1), eps=EPS, n_queries=1000)
    _assert_valid(x_adv, x, EPS)
    robust = _acc(logits_fn, x_adv, y)
    assert robust <= clean - 0.04, (clean, robust)         # measured: 0.984 → 0.781
    assert robust <= _acc(logits_fn, few, y)                # more queries never hurt on the same key
    # Perturbed pixels sit on the ε-ball's vertices or the box edge (Square only takes ±ε moves).
    moved = np.asarray(jnp.abs(x_adv - x))
    edge = (np.asarray(x_adv) == 0) | (np.asarray(x_adv) == 1)
    assert np.all((moved == 0) | np.isclose(moved, EPS, atol=1e-6) | edge)
