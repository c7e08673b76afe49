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

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sa_mdrad_jax.attacks.host_loop import as_partial, host_driven, host_fori_loop
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


def _bcast(v: jax.Array, x: jax.Array) -> jax.Array:
    return v.reshape((x.shape[0],) + (1,) * (x.ndim - 1))


def _loss_grad(logits_fn: LogitsFn, loss_fn: LossFn, y: jax.Array):
    """z ↦ (∇_z Σ loss, (per-example loss, logits)): one forward/backward gives all three."""

    def loss_and_logits(z):
        logits = logits_fn(z)
        losses = loss_fn(logits, y)
        return jnp.sum(losses), (losses, logits)

    return jax.grad(loss_and_logits, has_aux=True)


def _checkpoint_tables(n_iter: int) -> tuple[jax.Array, jax.Array]:
    """(is a checkpoint after iterate k, window length ending there) for k = 0..n_iter."""
    ckpts = checkpoints(n_iter)
    is_ckpt = np.zeros(n_iter + 1, bool)
    window = np.zeros(n_iter + 1, np.float32)
    is_ckpt[ckpts] = True
    window[ckpts] = np.diff([0] + ckpts)
    return jnp.asarray(is_ckpt), jnp.asarray(window)


def apgd_start(logits_fn: LogitsFn, loss_fn: LossFn, x: jax.Array, y: jax.Array, key: jax.Array, *,
               eps: float) -> _State:
    """The state before iteration 0: a random start on the ε-sphere (clipped to [0, 1]), η = 2ε."""
    x = jax.lax.stop_gradient(x)
    t = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
    t_max = jnp.max(jnp.abs(t).reshape(x.shape[0], -1), axis=1)
    x0 = jnp.clip(x + eps * t / _bcast(t_max, x), 0.0, 1.0)
    g0, (loss0, logits0) = _loss_grad(logits_fn, loss_fn, y)(x0)
    broken0 = jnp.argmax(logits0, axis=-1) != y
    return _State(x_adv=x0, x_old=x0, grad=g0, step=jnp.full((x.shape[0],), 2 * eps, x.dtype),
                  x_best=x0, grad_best=g0, loss_best=loss0, loss_prev=loss0,
                  n_inc=jnp.zeros((x.shape[0],), jnp.int32), loss_best_last_check=loss0,
                  halved_last_check=jnp.ones((x.shape[0],), bool), x_ret=x0, broken=broken0)


def apgd_iterate(k: jax.Array, s: _State, logits_fn: LogitsFn, loss_fn: LossFn, x: jax.Array, y: jax.Array, *,
                 eps: float, n_iter: int, rho: float = RHO) -> _State:
    """Iteration k (0-based) of an APGD run: step, momentum, bookkeeping, checkpoint after k+1."""
    x = jax.lax.stop_gradient(x)
    is_ckpt, window = _checkpoint_tables(n_iter)
    alpha = jnp.where(k == 0, 1.0, 0.75)
    z = project(s.x_adv + _bcast(s.step, x) * jnp.sign(s.grad), x, eps)
    x_new = project(s.x_adv + alpha * (z - s.x_adv) + (1 - alpha) * (s.x_adv - s.x_old), x, eps)
    grad, (loss, logits) = _loss_grad(logits_fn, loss_fn, y)(x_new)

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


def apgd_result(s: _State) -> RunResult:
    """A run's result: the first misclassified iterate if broken, else the best-loss point."""
    out = RunResult(where_b(s.broken, s.x_ret, s.x_best), s.broken, s.loss_best, s.x_adv)
    return jax.tree.map(jax.lax.stop_gradient, out)


def apgd_run(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, key: jax.Array, *, eps: float,
             n_iter: int, loss_fn: LossFn, rho: float = RHO) -> RunResult:
    """One APGD run maximising `loss_fn(logits, y)`; RunResult.loss is the best loss reached."""
    body = lambda k, s: apgd_iterate(k, s, logits_fn, loss_fn, x, y, eps=eps, n_iter=n_iter, rho=rho)
    return apgd_result(jax.lax.fori_loop(0, n_iter, body, apgd_start(logits_fn, loss_fn, x, y, key, eps=eps)))


_start_jit = jax.jit(apgd_start, static_argnames=("eps",))
_iterate_jit = jax.jit(apgd_iterate, static_argnames=("eps", "n_iter", "rho"))
_result_jit = jax.jit(apgd_result)
_merge_jit = jax.jit(merge_runs)
_all_broken = jax.jit(lambda s: jnp.all(s.broken))


def apgd_run_host(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, key: jax.Array, *, eps: float,
                  n_iter: int, loss_fn: LossFn, rho: float = RHO) -> RunResult:
    """`apgd_run` driven from the host (attacks/host_loop.py), one jitted iteration per call.

    Stops once every point is broken: x_adv and broken are then what the full run returns (a
    broken point keeps its first misclassified iterate); loss and x_last are those of the stop.
    `logits_fn` and `loss_fn` are passed to the jitted pieces as pytrees (`as_partial`).
    """
    logits_fn, loss_fn = as_partial(logits_fn), as_partial(loss_fn)
    body = lambda k, s: _iterate_jit(k, s, logits_fn, loss_fn, x, y, eps=eps, n_iter=n_iter, rho=rho)
    state = _start_jit(logits_fn, loss_fn, x, y, key, eps=eps)
    return _result_jit(host_fori_loop(0, n_iter, body, state, stop=_all_broken))


@register_attack("apgd_ce")
def apgd_ce(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, key: jax.Array, *,
            eps: float = 8 / 255, n_iter: int = 100, restarts: int = 1) -> jax.Array:
    """APGD on the cross-entropy; restarts (keys folded with r) only matter for robust points."""
    run = lambda k: apgd_run(logits_fn, x, y, k, eps=eps, n_iter=n_iter, loss_fn=cross_entropy)
    return with_restarts(run, key, restarts).x_adv


@host_driven
def apgd_ce_host(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, key: jax.Array, *,
                 eps: float = 8 / 255, n_iter: int = 100, restarts: int = 1) -> jax.Array:
    """`apgd_ce` driven from the host (attacks/host_loop.py); the same result."""
    run = lambda k: apgd_run_host(logits_fn, x, y, k, eps=eps, n_iter=n_iter, loss_fn=cross_entropy)
    best = run(jax.random.fold_in(key, 0))
    for r in range(1, restarts):
        if bool(_all_broken(best)):
            break
        best = _merge_jit(best, run(jax.random.fold_in(key, r)))
    return best.x_adv


def apgd_t_targets(logits_fn: LogitsFn, x: jax.Array, n_target_classes: int) -> jax.Array:
    """[B, n_target_classes + 1] class indices by descending clean logit (column 0: the top one)."""
    clean_logits = jax.lax.stop_gradient(logits_fn(x))
    n_classes = clean_logits.shape[-1]
    if not 1 <= n_target_classes <= n_classes - 1:
        raise ValueError(f"n_target_classes={n_target_classes} needs 1..{n_classes - 1}.")
    return jax.lax.top_k(clean_logits, n_target_classes + 1)[1]


def _dlr_towards(target: jax.Array, logits: jax.Array, y: jax.Array) -> jax.Array:
    return dlr_targeted(logits, y, target)


def _no_run(x: jax.Array) -> RunResult:
    """"No run yet": never broken, loss −∞, so the first run replaces it in `merge_runs`."""
    b = x.shape[0]
    return RunResult(x, jnp.zeros((b,), bool), jnp.full((b,), -jnp.inf, jnp.float32), x)


@register_attack("apgd_t")
def apgd_t(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, key: jax.Array, *,
           eps: float = 8 / 255, n_iter: int = 100, n_target_classes: int = 9) -> jax.Array:
    """APGD-T: one APGD run on the targeted DLR per target class; the targets are the classes
    with the 2nd … (n_target_classes+1)-th largest clean logits. A run is skipped once every point
    is broken; per example the first target run that breaks it is kept."""
    ranked = apgd_t_targets(logits_fn, x, n_target_classes)

    def run(i):
        target = jax.lax.dynamic_index_in_dim(ranked, i + 1, axis=1, keepdims=False)
        return apgd_run(logits_fn, x, y, jax.random.fold_in(key, i), eps=eps, n_iter=n_iter,
                        loss_fn=functools.partial(_dlr_towards, target))

    def body(i, best):
        return jax.lax.cond(jnp.all(best.broken), lambda: best, lambda: merge_runs(best, run(i)))

    # Start from "no run yet", so the loop body is the only copy of the run in the program — half
    # the compilation of run(0) + loop.
    return jax.lax.fori_loop(0, n_target_classes, body, _no_run(x)).x_adv


_targets_jit = jax.jit(apgd_t_targets, static_argnames=("n_target_classes",))


@host_driven
def apgd_t_host(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, key: jax.Array, *,
                eps: float = 8 / 255, n_iter: int = 100, n_target_classes: int = 9) -> jax.Array:
    """`apgd_t` driven from the host (attacks/host_loop.py); the same result."""
    logits_fn = as_partial(logits_fn)
    ranked = _targets_jit(logits_fn, x, n_target_classes=n_target_classes)
    best = _no_run(x)
    for i in range(n_target_classes):
        if bool(_all_broken(best)):
            break
        loss_fn = jax.tree_util.Partial(_dlr_towards, ranked[:, i + 1])
        best = _merge_jit(best, apgd_run_host(logits_fn, x, y, jax.random.fold_in(key, i), eps=eps,
                                              n_iter=n_iter, loss_fn=loss_fn))
    return best.x_adv
