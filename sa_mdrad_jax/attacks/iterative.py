"""Evaluation PGD with any loss, any-iterate bookkeeping and restarts; the named attacks.

    for each restart r (key folded with r):
        x'_0 = x + init                                     (as the training `pgd`: not clipped
        repeat K times:                                      to [0, 1] before the first gradient)
            x'_{k+1} = P(x'_k + η·sign(∇ Σ_i L(f(x'_k))_i)),   P = ε-ball ∩ [0, 1]

A point counts as broken if ANY iterate (the projected start P(x'_0) included) is misclassified
(evaluation.md). Per example we return the first misclassified iterate of the first restart that
breaks it; a point no restart breaks gets the final iterate of the restart with the highest final
loss. Restarts only matter for points still robust, and a restart is skipped entirely (lax.cond)
once every point is broken.

Step, projection and start are those of the shared training PGD (`attacks/pgd.py`): one PGD rule
in the project, here with the bookkeeping an evaluation needs.

The named attacks of evaluation.md implemented here (the PGD family) register themselves
(`attacks/registry.py`) as functions `attack(logits_fn, x, y, key, *, eps=8/255) -> x_adv`; 'pgd'
is the family whose options a spec string sets.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Union

import jax
import jax.numpy as jnp

from sa_mdrad_jax.attacks.fgsm import fgsm
from sa_mdrad_jax.attacks.losses import cross_entropy, cw_margin, dlr
from sa_mdrad_jax.attacks.pgd import INITS, init_perturbation, pgd_with_carry, project
from sa_mdrad_jax.attacks.registry import register_attack

LogitsFn = Callable[[jax.Array], jax.Array]
LossFn = Callable[[jax.Array, jax.Array], jax.Array]   # (logits [B, C], y [B]) -> [B]
LOSSES = ("ce", "cw", "dlr")


def resolve_loss(loss: Union[str, LossFn], kappa: float = 0.0) -> LossFn:
    """'ce' | 'cw' (margin with κ) | 'dlr' | a callable (logits, y) -> per-example loss."""
    if callable(loss):
        return loss
    if loss == "ce":
        return cross_entropy
    if loss == "cw":
        return functools.partial(cw_margin, kappa=kappa)
    if loss == "dlr":
        return dlr
    raise ValueError(f"Unknown attack loss {loss!r}. Valid: {', '.join(LOSSES)} or a callable.")


def where_b(mask: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """Per-example select: mask [B] broadcast over the trailing axes of a, b."""
    return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)


class RunResult(NamedTuple):
    """One run of an evaluation attack, per example."""
    x_adv: jax.Array     # first misclassified iterate if broken, else the run's fallback point
    broken: jax.Array    # bool [B]: some iterate was misclassified
    loss: jax.Array      # [B] loss used to pick among unbroken runs (higher is better)
    x_last: jax.Array    # the final iterate (for tests and diagnostics)


def pgd_run(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, key: jax.Array, *, eps: float,
            step_size: float, steps: int, loss_fn: LossFn, init: str = "uniform",
            normal_std: float = 0.001) -> RunResult:
    """A single PGD run with any-iterate tracking (see module docstring)."""
    x = jax.lax.stop_gradient(x)

    def tracked_loss(z, carry):
        # The logits at x'_k come free with its gradient; x'_0 may lie outside [0, 1] (raw start),
        # so it is checked below at its projection instead (k counts the iterates).
        k, x_ret, broken = carry
        logits = logits_fn(z)
        mis = (jnp.argmax(logits, axis=-1) != y) & (k > 0)
        return loss_fn(logits, y), (k + 1, where_b(mis & ~broken, z, x_ret), broken | mis)

    start = init_perturbation(key, x, eps, init, normal_std)
    x0 = project(start, x, eps)
    broken = jnp.argmax(logits_fn(x0), axis=-1) != y
    x_last, (_, x_ret, broken) = pgd_with_carry(tracked_loss, x, start, (jnp.int32(0), x0, broken), eps=eps,
                                                step_size=step_size, steps=steps)
    x_last = project(x_last, x, eps)   # a no-op when steps >= 1
    logits = logits_fn(x_last)
    mis = jnp.argmax(logits, axis=-1) != y
    x_ret = where_b(broken, x_ret, x_last)
    broken = broken | mis
    out = RunResult(x_ret, broken, loss_fn(logits, y), x_last)
    return jax.tree.map(jax.lax.stop_gradient, out)


def merge_runs(best: RunResult, new: RunResult) -> RunResult:
    """Keep, per example, the earlier run if it broke the point, else the new one if it broke it,
    else the run with the higher loss."""
    take_new = ~best.broken & (new.broken | (new.loss > best.loss))
    return jax.tree.map(lambda a, b: where_b(take_new, b, a), best, new)


def with_restarts(run: Callable[[jax.Array], RunResult], key: jax.Array, restarts: int) -> RunResult:
    """Runs `run(fold_in(key, r))` for r < restarts; a restart is skipped once all points broke."""
    first = run(jax.random.fold_in(key, 0))
    if restarts <= 1:
        return first

    def body(r, best):
        new = lambda: merge_runs(best, run(jax.random.fold_in(key, r)))
        return jax.lax.cond(jnp.all(best.broken), lambda: best, new)

    return jax.lax.fori_loop(1, restarts, body, first)


def pgd_attack(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, key: jax.Array, *, eps: float,
               step_size: float, steps: int, loss: Union[str, LossFn] = "ce", init: str = "uniform",
               normal_std: float = 0.001, restarts: int = 1, kappa: float = 0.0) -> jax.Array:
    """L∞ PGD for evaluation; returns x_adv in the ε-ball ∩ [0, 1] (see module docstring)."""
    loss_fn = resolve_loss(loss, kappa)
    run = lambda k: pgd_run(logits_fn, x, y, k, eps=eps, step_size=step_size, steps=steps,
                            loss_fn=loss_fn, init=init, normal_std=normal_std)
    return with_restarts(run, key, restarts).x_adv


# ----------------------------------------------------------------------------- named attacks

@register_attack("pgd20")
def pgd20(logits_fn: LogitsFn, x, y, key, *, eps: float = 8 / 255) -> jax.Array:
    """20 steps of 2/255 on CE from a uniform start in the ε-ball."""
    return pgd_attack(logits_fn, x, y, key, eps=eps, step_size=2 / 255, steps=20, loss="ce",
                      init="uniform")


@register_attack("pgd20_trades")
def pgd20_trades(logits_fn: LogitsFn, x, y, key, *, eps: float = 8 / 255) -> jax.Array:
    """20 steps of 0.003 on CE from x + 0.001·N(0, I) (the RSLAD/MTARD monitor)."""
    return pgd_attack(logits_fn, x, y, key, eps=eps, step_size=0.003, steps=20, loss="ce",
                      init="normal", normal_std=0.001)


@register_attack("cw_inf_30")
def cw_inf_30(logits_fn: LogitsFn, x, y, key, *, eps: float = 8 / 255) -> jax.Array:
    """30 steps of 2/255 on the CW margin with κ = 50 from a uniform start (IAD protocol)."""
    return pgd_attack(logits_fn, x, y, key, eps=eps, step_size=2 / 255, steps=30, loss="cw",
                      kappa=50.0, init="uniform")


@register_attack("cw_inf_50x10")
def cw_inf_50x10(logits_fn: LogitsFn, x, y, key, *, eps: float = 8 / 255) -> jax.Array:
    """50 steps of 2/255 on the CW margin (κ = 0), 10 uniform restarts; a broken point keeps
    the restart that broke it."""
    return pgd_attack(logits_fn, x, y, key, eps=eps, step_size=2 / 255, steps=50, loss="cw",
                      kappa=0.0, init="uniform", restarts=10)


def _check_pgd(*, steps, step_size, restarts, loss, kappa, init, normal_std) -> None:
    if steps < 0 or restarts < 1:
        raise ValueError(f"steps must be >= 0 and restarts >= 1, got steps={steps}, restarts={restarts}.")
    if step_size <= 0 or kappa < 0 or normal_std < 0:
        raise ValueError(f"step_size must be > 0, kappa and normal_std >= 0; got step_size={step_size}, "
                         f"kappa={kappa}, normal_std={normal_std}.")
    if loss not in LOSSES:
        raise ValueError(f"Unknown attack loss {loss!r}. Valid: {', '.join(LOSSES)}.")
    if init not in INITS:
        raise ValueError(f"Unknown PGD init {init!r}. Valid: {', '.join(INITS)}.")


@register_attack("pgd", check=_check_pgd)
def pgd_spec(logits_fn: LogitsFn, x, y, key, *, eps: float = 8 / 255, steps: int = 20, step_size: float = 2 / 255,
             restarts: int = 1, loss: str = "ce", kappa: float = 0.0, init: str = "uniform",
             normal_std: float = 0.001) -> jax.Array:
    """`pgd_attack` with every option settable from a spec string ('pgd:steps=50,restarts=2,loss=cw');
    the defaults are pgd20's."""
    return pgd_attack(logits_fn, x, y, key, eps=eps, step_size=step_size, steps=steps, loss=loss, init=init,
                      normal_std=normal_std, restarts=restarts, kappa=kappa)
