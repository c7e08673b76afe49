"""FGSM (Goodfellow et al. 2015): one signed-gradient step of size ε on the cross-entropy.

    x' = clip(x + ε·sign(∇_x CE(f(x), y)), 0, 1)

No random start. This is the shared `pgd` with one step of size ε from the clean point, so it
agrees exactly with one step of every other PGD in the project.
"""
from __future__ import annotations

from typing import Callable

import jax

from sa_mdrad_jax.attacks.losses import cross_entropy
from sa_mdrad_jax.attacks.pgd import pgd
from sa_mdrad_jax.attacks.registry import register_attack


@register_attack("fgsm")
def fgsm(logits_fn: Callable[[jax.Array], jax.Array], x: jax.Array, y: jax.Array, key: jax.Array, *,
         eps: float = 8 / 255) -> jax.Array:
    """One step of size ε on CE; `key` is unused (kept for the common attack signature)."""
    return pgd(lambda z: cross_entropy(logits_fn(z), y), x, key, eps=eps, step_size=eps, steps=1,
               init="none")
