"""Per-example attack losses on logits, all to be MAXIMISED by an attack; each returns shape [B].

    cross_entropy(z, y)        = logsumexp(z) − z_y
    kl_div(p, z)               = Σ_i p_i (log p_i − log softmax(z)_i)            = KL(p ‖ softmax(z))
    cw_margin(z, y, κ)         = −max(z_y − max_{i≠y} z_i, −κ) = min(max_{i≠y} z_i − z_y, κ)
    dlr(z, y)                  = −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 1e-12)
    dlr_targeted(z, y, t)      = −(z_y − z_t) / (z_π1 − ½(z_π3 + z_π4) + 1e-12)

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


def _true_logit(logits: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]


def _best_other_logit(logits: jax.Array, y: jax.Array) -> jax.Array:
    """max_{i≠y} z_i (the true class is masked with −inf, which carries no gradient)."""
    is_true = jax.nn.one_hot(y, logits.shape[-1], dtype=bool)
    return jnp.max(jnp.where(is_true, -jnp.inf, logits), axis=-1)


def cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
    """−log softmax(z)_y per example."""
    return jax.nn.logsumexp(logits, axis=-1) - _true_logit(logits, y)


def kl_div(target_probs: jax.Array, logits: jax.Array) -> jax.Array:
    """KL(p ‖ softmax(z)) per example; terms with p_i = 0 contribute 0."""
    log_q = jax.nn.log_softmax(logits, axis=-1)
    p = target_probs
    log_p = jnp.log(jnp.where(p > 0, p, 1.0))
    return jnp.sum(jnp.where(p > 0, p * (log_p - log_q), 0.0), axis=-1)


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
