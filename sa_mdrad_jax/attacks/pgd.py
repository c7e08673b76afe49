"""Projected gradient descent in the L∞ ball: the attack of every training method.

    x'_0 = x + init                    'normal': 0.001·N(0, I) | 'uniform': U(-ε, ε) | 'none'
    repeat K times:
        g  = ∇_{x'} Σ_i L(x')_i        (per-example losses summed: each example's own gradient)
        x' = clip(clip(x' + η·sign(g), x − ε, x + ε), 0, 1)
    x' = stop_gradient(x')

(Madry et al. 2018; the start point is not clipped to [0, 1] before the first gradient, as in
the TRADES/RSLAD/ARD/AdaAD reference codes.) The loop is a `lax.fori_loop` (fully unrolled on CPU for
K <= 20, where XLA:CPU runs it faster so; `resolve_unroll`). The same function serves training (any inner loss of methods.md §3) and the
evaluation suite.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Callable

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
    x_adv, _ = pgd_with_carry(lambda z, carry: (loss_fn(z), carry), x, start, (), eps=eps,
                              step_size=step_size, steps=steps)
    return x_adv


def sign_step(x_adv: jax.Array, grad: jax.Array, step_size: float) -> jax.Array:
    """The L∞ steepest-ascent step x' + η·sign(g)."""
    return x_adv + step_size * jnp.sign(grad)


def pgd_with_carry(loss_fn: Callable[[jax.Array, Any], tuple[jax.Array, Any]], x: jax.Array, start: jax.Array,
                   carry: Any, *, eps: float, step_size: float, steps: int,
                   unroll: int | bool | None = None, step_rule: Callable = sign_step,
                   projection: Callable = project) -> tuple[jax.Array, Any]:
    """PGD whose loss also threads an auxiliary state through the iterations.

    `loss_fn(z, carry) -> (per-example losses [B], new carry)`; returns (x', final carry). Used by
    training methods that attack with the student's BatchNorm in train mode (ARD, IAD): every
    attack forward updates the running statistics, and the outer loss starts from the result.
    With `steps=0` the carry is returned unchanged. `unroll` is the `fori_loop` unroll factor
    (True: fully unrolled); None uses the enclosing `loop_unroll(...)` context, else the
    SA_MDRAD_PGD_UNROLL environment variable, else 'auto' (`resolve_unroll`), so a benchmark can
    compare them without threading a flag through every step builder. The choice changes speed and
    float rounding only: without XLA's optimizations the two forms train bit-identical states
    (tests/test_distill_step.py); fully optimized, XLA fuses them differently, and a run's trajectory
    drifts at the float-rounding level, as between two CPUs (AdaAD on digits: identical for the
    first epoch, validation accuracies a few tenths of a point apart after three).

    This is the project's one PGD loop: training (`pgd`, `pgd_from`, the distillation step) and the
    evaluation attacks (`iterative.pgd_run`, which tracks the first misclassified iterate in the
    carry) all run it. `step_rule(x', g, η)` and `projection(x', x, ε)` are arguments (L∞ sign
    step and projection onto the ε-ball ∩ [0, 1] by default), as in DeepMind's attack composition.
    """
    x = jax.lax.stop_gradient(x)
    grad_fn = jax.grad(lambda z, c: _summed(loss_fn(z, c)), has_aux=True)

    def body(_, val):
        x_adv, c = val
        g, c = grad_fn(x_adv, c)
        return projection(step_rule(x_adv, g, step_size), x, eps), c

    start = jax.lax.stop_gradient(start)
    if steps == 0:
        return jax.lax.stop_gradient(projection(start, x, eps)), carry
    unroll = resolve_unroll(_UNROLL[-1] if unroll is None else unroll, steps)
    x_adv, carry = jax.lax.fori_loop(0, steps, body, (start, carry), unroll=unroll)
    return jax.lax.stop_gradient(x_adv), carry


_UNROLL = [None]   # None: SA_MDRAD_PGD_UNROLL, else 'auto'
UNROLL_ENV = "SA_MDRAD_PGD_UNROLL"
AUTO_UNROLL_MAX_STEPS = 20   # 'auto' unrolls loops of at most this many steps on CPU (PGD-10, PGD-20)


def resolve_unroll(unroll: int | bool | str | None, steps: int) -> int | bool:
    """The `fori_loop` unroll of a `steps`-step PGD loop.

    None reads SA_MDRAD_PGD_UNROLL ('auto' when unset): 'auto' unrolls fully on a CPU backend when
    `steps` <= AUTO_UNROLL_MAX_STEPS and keeps the loop rolled otherwise; 'rolled' (1) and
    'unrolled' (True) force one; an int is the unroll factor. Why: XLA:CPU runs a network's
    gradient inside a while loop 1.4-3.6x slower than the same computation unrolled, and any
    partial unroll (2, 5) is as slow as the rolled loop (BENCHMARKS.md, "The PGD loop on CPU"); on
    GPUs/TPUs unrolling has not been measured, so it stays rolled there (one compiled body).
    """
    if unroll is None:
        unroll = os.environ.get(UNROLL_ENV, "auto")
    if isinstance(unroll, str):
        choices = {"rolled": 1, "unrolled": True}
        if unroll == "auto":
            return True if jax.default_backend() == "cpu" and steps <= AUTO_UNROLL_MAX_STEPS else 1
        if unroll in choices:
            return choices[unroll]
        if not unroll.isdigit() or int(unroll) < 1:
            raise ValueError(f"{UNROLL_ENV}={unroll!r}: accepted are 'auto', 'rolled', 'unrolled' or a positive "
                             "integer unroll factor.")
        return int(unroll)
    return unroll


@contextlib.contextmanager
def loop_unroll(unroll: int | bool):
    """Within this context, PGD loops traced without an explicit `unroll` use this factor."""
    _UNROLL.append(unroll)
    try:
        yield
    finally:
        _UNROLL.pop()


def _summed(out):
    losses, carry = out
    return jnp.sum(losses), carry
