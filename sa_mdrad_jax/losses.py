"""Every loss on logits, in one place: the attacks' and the methods' (methods.md §1, evaluation.md).

Per example, shape [B] (y: integer labels [B]; p: a target distribution [B, C]):

    cross_entropy(z, y)        = logsumexp(z) − z_y                          (optax; alias `ce`)
    kl_per_example(p, z, τ)    = Σ_c p_c (log p_c − log σ_τ(z)_c), 0·log 0 = 0  (alias `kl_div`, τ = 1)
    cw_margin(z, y, κ)         = −max(z_y − max_{i≠y} z_i, −κ) = min(max_{i≠y} z_i − z_y, κ)
    dlr(z, y)                  = −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 1e-12)
    dlr_targeted(z, y, t)      = −(z_y − z_t) / (z_π1 − ½(z_π3 + z_π4) + 1e-12)

and the reductions and targets of distillation: `kl_batchmean` (the mean per-sample KL; every other
reduction, e.g. PyTorch's 'mean' = batchmean / C, is an explicit `kl_scale` in the method config),
`softmax_target`, `mean_teacher_probs`, `teacher_target`. The attacks maximise the per-example
losses (PGD differentiates their sum); the methods' outer losses take `batchmean`.

z_π are the logits sorted in decreasing order. The CW margin is Carlini & Wagner's (2017) f_6 with
the sign flipped so that larger means "more adversarial": it grows with the best wrong logit's lead
over the true one and saturates at κ (the attack stops pushing a point once it is misclassified by
a margin κ). It equals the IAD/TRADES `cwloss` (−clamp(z_y − max_{i≠y} z_i + κ, min=0)) plus the
constant κ, so both give the same gradients and the same attack. The DLR losses are Croce & Hein
(2020), "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
attacks", eqs. (6)–(7), as in fra31/auto-attack.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def _true_logit(logits: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]


def _best_other_logit(logits: jax.Array, y: jax.Array) -> jax.Array:
    """max_{i≠y} z_i (the true class is masked with −inf, which carries no gradient)."""
    is_true = jax.nn.one_hot(y, logits.shape[-1], dtype=bool)
    return jnp.max(jnp.where(is_true, -jnp.inf, logits), axis=-1)


def cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
    """−log softmax(z)_y per example [...] (labels may carry leading axes, e.g. [K,B] per teacher)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)


ce = cross_entropy


def kl_per_example(p: jax.Array, student_logits: jax.Array, tau: float = 1.0) -> jax.Array:
    """[B]: Σ_c p_ic (log p_ic − log σ_τ(s)_ic), with 0·log 0 = 0."""
    log_q = jax.nn.log_softmax(student_logits / tau, axis=-1)
    plogp = jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)
    return jnp.sum(plogp - p * log_q, axis=-1)


def kl_batchmean(p: jax.Array, student_logits: jax.Array, tau: float = 1.0) -> jax.Array:
    """(1/B) Σ_i Σ_c p_ic (log p_ic − log σ_τ(s)_ic): the mean per-sample KL."""
    return jnp.mean(kl_per_example(p, student_logits, tau))


def softmax_target(logits: jax.Array, tau: float = 1.0) -> jax.Array:
    """σ_τ of target logits with no gradient. [..., C]"""
    return jax.lax.stop_gradient(jax.nn.softmax(logits / tau, axis=-1))


def mean_teacher_probs(t: jax.Array, tau: float = 1.0) -> jax.Array:
    """[K,B,C] teacher logits -> [B,C] uniform average of σ_τ(t_k). With one teacher (every
    baseline's paper setting) it is σ_τ(t_0); with K > 1 the baselines distil the uniform mixture.
    Differentiable: callers stop the gradient where the method does."""
    return jnp.mean(jax.nn.softmax(t / tau, axis=-1), axis=0)


def teacher_target(t: jax.Array, tau: float = 1.0) -> jax.Array:
    """The no-gradient distillation target of [K,B,C] teacher logits: `mean_teacher_probs`."""
    return jax.lax.stop_gradient(mean_teacher_probs(t, tau))


def kl_div(target_probs: jax.Array, logits: jax.Array) -> jax.Array:
    """KL(p ‖ softmax(z)) per example: `kl_per_example` at τ = 1."""
    return kl_per_example(target_probs, logits)


def cw_margin(logits: jax.Array, y: jax.Array, kappa: float = 0.0) -> jax.Array:
    """min(max_{i≠y} z_i − z_y, κ): positive iff misclassified; saturates at κ."""
    margin = _true_logit(logits, y) - _best_other_logit(logits, y)
    return -jnp.maximum(margin, -kappa)


def dlr(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Untargeted Difference-of-Logits-Ratio loss (needs ≥ 3 classes)."""
    top = jax.lax.top_k(logits, 3)[0]
    margin = _true_logit(logits, y) - _best_other_logit(logits, y)
    return -margin / (top[:, 0] - top[:, 2] + 1e-12)


def dlr_targeted(logits: jax.Array, y: jax.Array, target: jax.Array) -> jax.Array:
    """Targeted DLR towards class `target` (needs ≥ 4 classes)."""
    top = jax.lax.top_k(logits, 4)[0]
    margin = _true_logit(logits, y) - _true_logit(logits, target)
    return -margin / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)
