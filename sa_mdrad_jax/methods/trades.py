"""TRADES (Zhang et al., ICML 2019), methods.md §3, and its KL term as a composable term.

    inner:  Σ_i KL(σ S(x)_i ‖ σ S(x')_i), S(x) a no-gradient reference, 0.001·N start, BN eval
    outer:  CE(S(x), y) + β · KL_bm(σ S(x) ‖ σ S(x'))            β = 6

The gradient of the outer KL flows through both the clean and the adversarial branch (the
reference code does not detach S(x)).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from sa_mdrad_jax.methods import losses
from sa_mdrad_jax.methods.base import AttackContext, Method, Outputs, Term, register, register_term


def trades_kl(s_nat: jax.Array, s_adv: jax.Array) -> jax.Array:
    """KL_bm(σ S(x) ‖ σ S(x')), differentiable w.r.t. both logits."""
    return losses.kl_batchmean(jax.nn.softmax(s_nat, axis=-1), s_adv)


def trades_inner(ctx: AttackContext) -> jax.Array:
    return losses.kl_per_example(jax.nn.softmax(ctx.s_nat, axis=-1), ctx.s)


@register("trades")
def make(config, teacher_names=None) -> Method:
    del teacher_names
    beta = config.beta

    def outer(out: Outputs):
        ce = jnp.mean(losses.ce(out.s_nat, out.y))
        kl = trades_kl(out.s_nat, out.s_adv)
        return ce + beta * kl, {"ce_nat": ce, "trades_kl": kl}

    return Method(name="trades", outer_loss=outer, inner_loss=trades_inner, inner_refs=("s_nat",),
                  attack_init=config.attack_init, attack_bn="eval", student_views=("nat", "adv"))


@register_term("trades_kl")
def make_term(config) -> Term:
    """+ weight · KL_bm(σ S(x) ‖ σ S(x')) on any method (config: weight, 6 in TRADES)."""
    weight = config.weight

    def loss(out: Outputs):
        kl = trades_kl(out.s_nat, out.s_adv)
        return weight * kl, {"trades_kl": kl}

    return Term(name="trades_kl", loss=loss, student_views=("nat", "adv"))
