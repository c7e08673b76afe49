"""PGD-AT (Madry et al. 2018): CE on PGD adversarial examples, uniform start, BN eval in the attack."""
from __future__ import annotations

import jax.numpy as jnp
import optax

from sa_mdrad_jax.methods.base import Method, Outputs, register


def ce_per_example(logits, y, *unused):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)


def _outer(out: Outputs):
    ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out.s_adv, out.y))
    return ce, {"ce_adv": ce}


@register("pgd_at")
def make(config) -> Method:
    del config
    return Method(name="pgd_at", outer_loss=_outer, inner_loss=ce_per_example, attack_init="uniform",
                  attack_bn="eval", student_views=("adv",))
