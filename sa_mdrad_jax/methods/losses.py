"""KL divergences with explicit reductions (methods.md §1 "KL reductions").

Per element e_ic = p_ic (log p_ic − log q_ic), p the target distribution, q = σ_τ(s) the
student's. `kl_per_example` sums over classes; the inner losses sum it over the batch (PGD
differentiates the sum), the outer losses take `batchmean` and carry every other reduction
(PyTorch's 'mean' = batchmean / C) as an explicit `kl_scale` in the config.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


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


def ce(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Per-example cross-entropy [B]."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)


def teacher_target(t: jax.Array, tau: float = 1.0) -> jax.Array:
    """The no-gradient distillation target of [K,B,C] teacher logits: `mean_teacher_probs`."""
    return jax.lax.stop_gradient(mean_teacher_probs(t, tau))
