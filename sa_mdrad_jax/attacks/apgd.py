"""APGD and APGD-T (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", Alg. 1), L∞ version, as in fra31/auto-attack.

    x_0     = clip(x + ε·t/‖t‖∞, 0, 1),  t ~ U(−1, 1)^d;   η_0 = 2ε (per example)
    z_{k+1} = P(x_k + η·sign(∇L(x_k)))
    x_{k+1} = P(x_k + α(z_{k+1} − x_k) + (1 − α)(x_k − x_{k−1})),   α = 1 at k = 0, else 0.75

P is the projection onto the ε-ball ∩ [0, 1]. Checkpoints w_j = ⌈p_j N⌉ with p_0 = 0,
p_1 = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06) (`checkpoints`). At checkpoint w_j an
example's step is halved (`halve_step`) if

    (a) #{k ∈ (w_{j−1}, w_j] : L(x_k) > L(x_{k−1})} ≤ ρ·(w_j − w_{j−1}),   ρ = 0.75, or
    (b) its step was not halved at w_{j−1} and L_max(w_{j−1}) ≥ L_max(w_j),

and a halved example continues from its best-loss point (with that point's gradient). No check
happens at w_0 = 0, and at w_1 condition (b) is off (as if the step had been halved at w_0).

Where this differs from fra31/auto-attack (all immaterial at N = 100 except the last):
- `checkpoints` follows the paper's ⌈p_j N⌉; the reference uses ⌊0.22N⌋, ⌊0.03N⌋, ⌊0.06N⌋
  (each at least 1) for the first window, the shrink and the minimum window. Both give
  22, 41, …, 99 at N = 100; they differ for other N (e.g. N = 10).
- In the first window the first step is compared with the loss at the start point; the
  reference's `check_oscillation` reads loss_steps[−1] there (an unwritten row of zeros, by
  Python's negative indexing), so it counts that step as an increase iff the first loss is > 0.
- The returned point of a broken example is its FIRST misclassified iterate (the reference keeps
  the last one); an unbroken example gets its best-loss point (the reference returns x).

Any-iterate bookkeeping: the start and every iterate are checked; a point's first misclassified
iterate is returned; a point never broken gets its best-loss point. `apgd_ce` restarts and
`apgd_t`'s target classes only matter for points still robust (a run is skipped once all are
broken).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sa_mdrad_jax.attacks.iterative import RunResult, merge_runs, where_b, with_restarts
from sa_mdrad_jax.attacks.losses import cross_entropy, dlr_targeted
from sa_mdrad_jax.attacks.pgd import project
from sa_mdrad_jax.attacks.registry import register_attack

LogitsFn = Callable[[jax.Array], jax.Array]
LossFn = Callable[[jax.Array, jax.Array], jax.Array]
RHO = 0.75


def checkpoints(n_iter: int) -> list[int]:
    """Iteration counts w_1 < w_2 < … ≤ n_iter after which the step-size rule runs (w_0 = 0 is
    the start, not a check). checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99].

    p_j is kept in exact hundredths: 0.22·100 in floating point is 22.000000000000004, whose
    ceiling would be 23.
    """
    p_prev, p = 0, 22                      # hundredths
    out = []
    while p <= 100:
        w = -(-p * n_iter // 100)          # ⌈p·N/100⌉ in integers
        if 0 < w <= n_iter and (not out or w > out[-1]):
            out.append(w)
        p_prev, p = p, p + max(p - p_prev - 3, 6)
    return out


def count_increases(loss_trace: jax.Array) -> jax.Array:
    """#{k : L_k > L_{k−1}} over a trace [k+1, B] (the loss before the window, then its k steps)."""
    return jnp.sum(loss_trace[1:] > loss_trace[:-1], axis=0)


def halve_step(n_increases: jax.Array, window: jax.Array, loss_best: jax.Array,
               loss_best_last_check: jax.Array, halved_last_check: jax.Array,
               rho: float = RHO) -> jax.Array:
    """The per-example step-halving decision at a checkpoint (bool [B]); see module docstring.

    n_increases: how many of the `window` steps since the last checkpoint increased the loss.
    Condition (a) uses ≤ ρ·window as fra31/auto-attack's `check_oscillation` does (the paper writes
    <; the two differ only when ρ·window is an integer, e.g. window 16 at N = 100).
    """
    oscillating = n_increases <= rho * window
    stalled = ~halved_last_check & (loss_best_last_check >= loss_best)
    return oscillating | stalled


class _State(NamedTuple):
    x_adv: jax.Array
    x_old: jax.Array
    grad: jax.Array
    step: jax.Array            # [B]
    x_best: jax.Array
    grad_best: jax.Array
    loss_best: jax.Array
    loss_prev: jax.Array
    n_inc: jax.Array           # increases since the last checkpoint
    loss_best_last_check: jax.Array
    halved_last_check: jax.Array
    x_ret: jax.Array           # first misclassified iterate
    broken: jax.Array


def apgd_run(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, key: jax.Array, *, eps: float,
             n_iter: int, loss_fn: LossFn, rho: float = RHO) -> RunResult:
    """One APGD run maximising `loss_fn(logits, y)`; RunResult.loss is the best loss reached."""
    x = jax.lax.stop_gradient(x)
    b = x.shape[0]
    bcast = lambda v: v.reshape((b,) + (1,) * (x.ndim - 1))

    def loss_and_logits(z):
        logits = logits_fn(z)
        losses = loss_fn(logits, y)
        return jnp.sum(losses), (losses, logits)

    grad_fn = jax.grad(loss_and_logits, has_aux=True)

    t = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
    t_max = jnp.max(jnp.abs(t).reshape(b, -1), axis=1)
    x0 = jnp.clip(x + eps * t / bcast(t_max), 0.0, 1.0)
    g0, (loss0, logits0) = grad_fn(x0)
    broken0 = jnp.argmax(logits0, axis=-1) != y

    ckpts = checkpoints(n_iter)
    is_ckpt = np.zeros(n_iter + 1, bool)
    window = np.zeros(n_iter + 1, np.float32)
    is_ckpt[ckpts] = True
    window[ckpts] = np.diff([0] + ckpts)
    is_ckpt, window = jnp.asarray(is_ckpt), jnp.asarray(window)

    def body(k, s: _State) -> _State:
        alpha = jnp.where(k == 0, 1.0, 0.75)
        z = project(s.x_adv + bcast(s.step) * jnp.sign(s.grad), x, eps)
        x_new = project(s.x_adv + alpha * (z - s.x_adv) + (1 - alpha) * (s.x_adv - s.x_old), x, eps)
        grad, (loss, logits) = grad_fn(x_new)

        mis = jnp.argmax(logits, axis=-1) != y
        x_ret = where_b(mis & ~s.broken, x_new, s.x_ret)
        broken = s.broken | mis

        n_inc = s.n_inc + (loss > s.loss_prev)
        better = loss > s.loss_best
        x_best = where_b(better, x_new, s.x_best)
        grad_best = where_b(better, grad, s.grad_best)
        loss_best = jnp.where(better, loss, s.loss_best)

        # Checkpoint after iterate k+1 (the masks are static tables indexed by the loop counter).
        at = is_ckpt[k + 1]
        halve = at & halve_step(n_inc, window[k + 1], loss_best, s.loss_best_last_check,
                                s.halved_last_check, rho)
        return _State(
            x_adv=where_b(halve, x_best, x_new),
            x_old=s.x_adv,   # as the reference: momentum after a restart is x_best − x_{k}
            grad=where_b(halve, grad_best, grad),
            step=jnp.where(halve, s.step / 2, s.step),
            x_best=x_best, grad_best=grad_best, loss_best=loss_best,
            loss_prev=loss,
            n_inc=jnp.where(at, 0, n_inc),
            loss_best_last_check=jnp.where(at, loss_best, s.loss_best_last_check),
            halved_last_check=jnp.where(at, halve, s.halved_last_check),
            x_ret=x_ret, broken=broken)

    init = _State(x_adv=x0, x_old=x0, grad=g0, step=jnp.full((b,), 2 * eps, x.dtype),
                  x_best=x0, grad_best=g0, loss_best=loss0, loss_prev=loss0,
                  n_inc=jnp.zeros((b,), jnp.int32), loss_best_last_check=loss0,
                  halved_last_check=jnp.ones((b,), bool), x_ret=x0, broken=broken0)
    s = jax.lax.fori_loop(0, n_iter, body, init)
    out = RunResult(where_b(s.broken, s.x_ret, s.x_best), s.broken, s.loss_best, s.x_adv)
    return jax.tree.map(jax.lax.stop_gradient, out)


@register_attack("apgd_ce")
def apgd_ce(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, key: jax.Array, *,
            eps: float = 8 / 255, n_iter: int = 100, restarts: int = 1) -> jax.Array:
    """APGD on the cross-entropy; restarts (keys folded with r) only matter for robust points."""
    run = lambda k: apgd_run(logits_fn, x, y, k, eps=eps, n_iter=n_iter, loss_fn=cross_entropy)
    return with_restarts(run, key, restarts).x_adv


@register_attack("apgd_t")
def apgd_t(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, key: jax.Array, *,
           eps: float = 8 / 255, n_iter: int = 100, n_target_classes: int = 9) -> jax.Array:
    """APGD-T: one APGD run on the targeted DLR per target class; the targets are the classes
    with the 2nd … (n_target_classes+1)-th largest clean logits. A run is skipped once every point
    is broken; per example the first target run that breaks it is kept."""
    clean_logits = jax.lax.stop_gradient(logits_fn(x))
    n_classes = clean_logits.shape[-1]
    if not 1 <= n_target_classes <= n_classes - 1:
        raise ValueError(f"n_target_classes={n_target_classes} needs 1..{n_classes - 1}.")
    ranked = jax.lax.top_k(clean_logits, n_target_classes + 1)[1]   # [B, n+1], descending

    def run(i):
        target = jax.lax.dynamic_index_in_dim(ranked, i + 1, axis=1, keepdims=False)
        loss_fn = lambda logits, y_: dlr_targeted(logits, y_, target)
        return apgd_run(logits_fn, x, y, jax.random.fold_in(key, i), eps=eps, n_iter=n_iter,
                        loss_fn=loss_fn)

    def body(i, best):
        return jax.lax.cond(jnp.all(best.broken), lambda: best, lambda: merge_runs(best, run(i)))

    # Start from "no run yet" (never broken, loss −∞: the first run replaces it), so the loop body
    # is the only copy of the run in the program — half the compilation of run(0) + loop.
    b = x.shape[0]
    none = RunResult(x, jnp.zeros((b,), bool), jnp.full((b,), -jnp.inf, jnp.float32), x)
    return jax.lax.fori_loop(0, n_target_classes, body, none).x_adv


