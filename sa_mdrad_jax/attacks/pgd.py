"""Projected gradient descent in the L∞ ball: the attack of every training method.

    x'_0 = x + init                    'normal': 0.001·N(0, I) | 'uniform': U(-ε, ε) | 'none'
    repeat K times:
        g  = ∇_{x'} Σ_i L(x')_i        (per-example losses summed: each example's own gradient)
        x' = clip(clip(x' + η·sign(g), x − ε, x + ε), 0, 1)
    x' = stop_gradient(x')

(Madry et al. 2018; the start point is not clipped to [0, 1] before the first gradient, as in
the TRADES/RSLAD/ARD/AdaAD reference codes.) The loop is a `lax.fori_loop`, so the step compiles
once whatever K is. The same function serves training (any inner loss of methods.md §3) and the
evaluation suite.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

INITS = ("none", "uniform", "normal")


def project(x_adv: jax.Array, x: jax.Array, eps: float) -> jax.Array:
    """Projection onto the ε-ball around x intersected with the image box [0, 1]."""
    return jnp.clip(jnp.clip(x_adv, x - eps, x + eps), 0.0, 1.0)


def init_perturbation(key: jax.Array, x: jax.Array, eps: float, kind: str, normal_std: float = 0.001) -> jax.Array:
    """The start x'_0 (not clipped to [0, 1])."""
    if kind == "none":
        return x
    if kind == "uniform":
        return x + jax.random.uniform(key, x.shape, x.dtype, -eps, eps)
    if kind == "normal":
        return x + normal_std * jax.random.normal(key, x.shape, x.dtype)
    raise ValueError(f"Unknown PGD init {kind!r}. Valid: {', '.join(INITS)}.")


def pgd(loss_fn: Callable[[jax.Array], jax.Array], x: jax.Array, key: jax.Array, *, eps: float,
        step_size: float, steps: int, init: str = "uniform", normal_std: float = 0.001) -> jax.Array:
    """Maximises `loss_fn(x') -> per-example losses [B]` over the L∞ ε-ball around x.

    Returns x' with no gradient attached. `steps=0` returns the (projected) start point.
    """
    start = init_perturbation(key, jax.lax.stop_gradient(x), eps, init, normal_std)
    return pgd_from(loss_fn, x, start, eps=eps, step_size=step_size, steps=steps)


def pgd_from(loss_fn: Callable[[jax.Array], jax.Array], x: jax.Array, start: jax.Array, *, eps: float,
             step_size: float, steps: int) -> jax.Array:
    """PGD from a given start point (e.g. drawn for the global batch before sharding)."""
    x = jax.lax.stop_gradient(x)
    grad_fn = jax.grad(lambda z: jnp.sum(loss_fn(z)))

    def body(_, x_adv):
        g = grad_fn(x_adv)
        return project(x_adv + step_size * jnp.sign(g), x, eps)

    start = jax.lax.stop_gradient(start)
    if steps == 0:
        return jax.lax.stop_gradient(project(start, x, eps))
    return jax.lax.stop_gradient(jax.lax.fori_loop(0, steps, body, start))
