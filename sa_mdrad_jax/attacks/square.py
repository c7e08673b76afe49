"""Square attack in L∞ (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020): score-based, no gradients.

    margin(z) = z_y − max_{j≠y} z_j                       (< 0 ⇔ misclassified; minimised)
    x_0 = clip(x + ε·v, 0, 1),  v ∈ {±1}^{1×W×C}           (vertical stripes: one sign per column
                                                           and channel, shared down the column)
    for i = 0 .. n_queries−1, on the points not broken yet:
        s = max(round(√(p(i)·H·W)), 1)                    (side of the square)
        pick a corner (r, c) uniformly with 0 ≤ r < H − s, 0 ≤ c < W − s, and a sign per channel;
        x' = P(x_best + 2ε·sign on the s×s window)        (P: projection onto ε-ball ∩ [0,1])
        accept x' if margin(x') < margin(x_best)

P(·) after adding ±2ε puts every window pixel on a vertex of the ε-ball (or the box edge). The
step-size schedule p(i) is the reference's: p = p_init · 2^{−m}, m = 0,1,…,9 at the break points
i ∈ (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000] of the raw iteration count, as AutoAttack's
standard version runs it (`SquareAttack(..., resc_schedule=False)`: with 5000 queries p stops at
p_init/128). `rescale_schedule=True` gives the `SquareAttack` default instead, i replaced by
⌊i/n_queries · 10000⌋ (as if the budget were 10 000 queries).

Differences from fra31/auto-attack `square.py` (none changes what counts as broken):
  * the square's position and signs are drawn per example (as in the original square-attack
    code); the AutoAttack port draws one position and one sign vector per iteration for the batch;
  * fixed shapes: every iteration computes on the whole batch and masks broken and
    clean-misclassified points (the reference gathers the survivors each iteration);
  * with the margin loss the reference's "loss improved or misclassified" acceptance is the
    same as "margin decreased" for points still robust, so a single margin is tracked.
Clean-misclassified points are returned as x; the others as their best (lowest-margin) point,
which is misclassified iff the point was broken.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sa_mdrad_jax.attacks.registry import register_attack

LogitsFn = Callable[[jax.Array], jax.Array]

_BREAKS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(i: int, n_queries: int, p_init: float, rescale: bool = False) -> float:
    """Fraction of pixels changed at iteration i (the reference's schedule; see module docstring)."""
    it = int(i / n_queries * 10000) if rescale else i
    halvings = sum(it > b for b in _BREAKS)
    return p_init / 2 ** halvings


def square_sizes(n_queries: int, p_init: float, height: int, width: int,
                 rescale: bool = False) -> np.ndarray:
    """Side of the square at every iteration: int32 [n_queries]."""
    sizes = [max(int(round(math.sqrt(p_schedule(i, n_queries, p_init, rescale) * height * width))), 1)
             for i in range(n_queries)]
    return np.minimum(np.asarray(sizes, np.int32), min(height, width))


def margin(logits: jax.Array, y: jax.Array) -> jax.Array:
    """z_y − max_{j≠y} z_j."""
    z_y = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
    others = jnp.where(jax.nn.one_hot(y, logits.shape[-1], dtype=bool), -jnp.inf, logits)
    return z_y - jnp.max(others, axis=1)


def _signs(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    return jnp.where(jax.random.bernoulli(key, 0.5, shape), 1.0, -1.0).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("logits_fn", "n_queries", "p_init", "rescale_schedule"))
@register_attack("square")
def square(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, key: jax.Array, *, eps: float | jax.Array,
           n_queries: int = 5000, p_init: float = 0.8, rescale_schedule: bool = False) -> jax.Array:
    """Square attack (L∞, margin loss); returns x_adv in the ε-ball ∩ [0,1] of x (NHWC).

    The defaults are AutoAttack's standard Square (5000 queries, p_init 0.8, schedule on the raw
    iteration count)."""
    x = jax.lax.stop_gradient(x.astype(jnp.float32))
    y = y.astype(jnp.int32)
    b, h, w, c = x.shape
    correct = margin(logits_fn(x), y) > 0
    k_init, k_loop = jax.random.split(key)
    x_best = jnp.clip(x + eps * _signs(k_init, (b, 1, w, c)), 0.0, 1.0)
    m_best = margin(logits_fn(x_best), y)
    sizes = jnp.asarray(square_sizes(n_queries, p_init, h, w, rescale_schedule))
    rows = jnp.arange(h)[None, :, None]
    cols = jnp.arange(w)[None, None, :]

    def body(i, carry):
        x_best, m_best = carry
        live = correct & (m_best > 0)
        s = sizes[i]
        k_r, k_c, k_s = jax.random.split(jax.random.fold_in(k_loop, i), 3)
        r0 = jax.random.randint(k_r, (b, 1, 1), 0, jnp.maximum(h - s, 1))
        c0 = jax.random.randint(k_c, (b, 1, 1), 0, jnp.maximum(w - s, 1))
        window = (rows >= r0) & (rows < r0 + s) & (cols >= c0) & (cols < c0 + s)   # [B,H,W]
        step = jnp.where(window[..., None], 2.0 * eps * _signs(k_s, (b, 1, 1, c)), 0.0)
        x_new = jnp.clip(jnp.clip(x_best + step, x - eps, x + eps), 0.0, 1.0)
        m_new = margin(logits_fn(x_new), y)
        accept = live & (m_new < m_best)
        x_best = jnp.where(accept[:, None, None, None], x_new, x_best)
        m_best = jnp.where(accept, m_new, m_best)
        return x_best, m_best

    # Stops once no point is left to fool (as the reference does): later iterations would be no-ops.
    def more(carry):
        i, _, m = carry
        return (i < n_queries) & jnp.any(correct & (m > 0))

    _, x_best, _ = jax.lax.while_loop(more, lambda c: (c[0] + 1, *body(c[0], c[1:])), (0, x_best, m_best))
    return jax.lax.stop_gradient(jnp.where(correct[:, None, None, None], x_best, x))
