"""PGD-AT (Madry et al. 2018): CE on PGD adversarial examples, uniform start, BN eval in the attack."""
from __future__ import annotations

import jax.numpy as jnp

from sa_mdrad_jax.methods import losses
from sa_mdrad_jax.methods.base import AttackContext, Method, Outputs, Recipe, register


def ce_inner(ctx: AttackContext):
    """CE(S(x'), y) per example: the inner loss of PGD-AT, ARD, IAD and MTARD."""
    return losses.ce(ctx.s, ctx.y)


def _outer(out: Outputs):
    ce = jnp.mean(losses.ce(out.s_adv, out.y))
    return ce, {"ce_adv": ce}


# Madry et al.: CE on x', uniform start. Paper schedule: Rice et al. 2020's 200 epochs, ×0.1 at 100 and 150, wd 5e-4.
@register("pgd_at", defaults=dict(attack_init="uniform"), teachers="none", quickstart=True, fashion_grid=True,
          recipe=Recipe(schedule=(200, (100, 150), 5e-4)))
def make(config, teacher_names=None) -> Method:
    del teacher_names
    return Method(name="pgd_at", outer_loss=_outer, inner_loss=ce_inner, attack_init=config.attack_init,
                  attack_bn="eval", student_views=("adv",))
