"""The shared PGD: projection, initialisation and ascent on hand-built losses."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sa_mdrad_jax.attacks import init_perturbation, pgd, project

EPS = 8 / 255


def test_projection_keeps_ball_and_box():
    x = jnp.array([0.0, 0.5, 1.0, 0.02])
    z = jnp.array([-0.5, 0.9, 1.3, 0.03])
    np.testing.assert_allclose(project(z, x, EPS), [0.0, 0.5 + EPS, 1.0, 0.03], rtol=1e-6)


@pytest.mark.parametrize("init", ["none", "uniform", "normal"])
def test_pgd_stays_in_ball_and_box_and_ascends(init):
    x = jax.random.uniform(jax.random.PRNGKey(0), (4, 6, 6, 3))
    w = jax.random.normal(jax.random.PRNGKey(1), (6 * 6 * 3,))
    loss = lambda z: z.reshape(4, -1) @ w           # linear: the maximiser is x + ε·sign(w), clipped
    x_adv = pgd(loss, x, jax.random.PRNGKey(2), eps=EPS, step_size=2 / 255, steps=10, init=init)
    assert float(jnp.max(jnp.abs(x_adv - x))) <= EPS + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    best = project(x + EPS * jnp.sign(w).reshape(6, 6, 3), x, EPS)
    np.testing.assert_allclose(x_adv, best, atol=1e-6)  # 10 steps of 2/255 reach the corner
    assert bool(jnp.all(loss(x_adv) > loss(x)))


def test_start_point_is_not_clipped_to_the_box_before_the_first_gradient():
    x = jnp.zeros((1, 4))
    start = init_perturbation(jax.random.PRNGKey(0), x, EPS, "uniform")
    assert float(start.min()) < 0.0          # the reference codes take the first gradient here
    # With steps=0 the start is projected; with steps>=1 the first gradient sees the raw start:
    # a loss whose gradient flips sign below 0 pushes the negative entries further up only if
    # it is evaluated there.
    loss = lambda z: jnp.sum(jnp.where(z < 0, z, -z), axis=-1)  # ascent: up below 0, down above
    x_adv = pgd(loss, x, jax.random.PRNGKey(0), eps=EPS, step_size=1e-4, steps=1, init="uniform")
    negative = start < 0
    # Entries that started below 0 moved up by the step before the box clip (then clipped to 0);
    # entries that started above 0 moved down.
    assert bool(jnp.all(x_adv[~negative] <= start[~negative]))
    assert bool(jnp.all(x_adv[negative] == 0.0))


def test_each_example_gets_its_own_gradient_sign():
    x = jnp.full((2, 3), 0.5)
    loss = lambda z: jnp.array([1.0, -1.0]) * jnp.sum(z, axis=-1)  # example 0 up, example 1 down
    x_adv = pgd(loss, x, jax.random.PRNGKey(0), eps=EPS, step_size=EPS, steps=1, init="none")
    np.testing.assert_allclose(x_adv[0], 0.5 + EPS, rtol=1e-6)
    np.testing.assert_allclose(x_adv[1], 0.5 - EPS, rtol=1e-6)
