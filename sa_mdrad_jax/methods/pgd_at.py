"""PGD-AT (Madry et al. 2018): CE on PGD adversarial examples, uniform start, BN eval in the attack."""
from __future__ import annotations

import jax.numpy as jnp

from sa_mdrad_jax.methods import losses
from sa_mdrad_jax.methods.base import AttackContext, Method, Outputs, register


def ce_inner(ctx: AttackContext):
    """CE(S(x'), y) per example: the inner loss of PGD-AT, ARD, IAD and MTARD."""
    return losses.ce(ctx.s, ctx.y)


def _outer(out: Outputs):
    ce = jnp.mean(losses.ce(out.s_adv, out.y))
    return ce, {"ce_adv": ce}


@register("pgd_at")
def make(config, teacher_names=None) -> Method:
    del teacher_names
    return Method(name="pgd_at", outer_loss=_outer, inner_loss=ce_inner, attack_init=config.attack_init,
                  attack_bn="eval", student_views=("adv",))
