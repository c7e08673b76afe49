"""TRADES (Zhang et al., ICML 2019), methods.md §3, and its KL term as a composable term.

    inner:  Σ_i KL(σ S(x)_i ‖ σ S(x')_i), S(x) a no-gradient reference, 0.001·N start, BN eval
    outer:  CE(S(x), y) + β · KL_bm(σ S(x) ‖ σ S(x'))            β = 6

The gradient of the outer KL flows through both the clean and the adversarial branch (the
reference code does not detach S(x)).

BN statistics: the reference step calls the student three times in train mode — S(x) for the
CE, then S(x') and S(x) again inside the KL — so the running statistics take three momentum
updates per step (x, x', x). `bn_forwards=3` reproduces that order (the third forward is a view
'nat_again' of x: same logits, same gradient, one more statistics update); `bn_forwards=2` (the
default) runs S(x) once and shares it between the CE and the KL.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from sa_mdrad_jax.methods import losses
from sa_mdrad_jax.methods.base import AttackContext, Method, Outputs, Recipe, Term, register, register_term


def trades_kl(s_nat: jax.Array, s_adv: jax.Array) -> jax.Array:
    """KL_bm(σ S(x) ‖ σ S(x')), differentiable w.r.t. both logits."""
    return losses.kl_batchmean(jax.nn.softmax(s_nat, axis=-1), s_adv)


def trades_inner(ctx: AttackContext) -> jax.Array:
    return losses.kl_per_example(jax.nn.softmax(ctx.s_nat, axis=-1), ctx.s)


def _cifar_recipe(config, dataset):
    """train_trades_cifar10.py: 10 steps of 0.007 at ε = 0.031, and its S(x), S(x'), S(x) BN order."""
    del dataset
    config.method.update(eps=0.031, step_size=0.007, steps=10)
    config.method.bn_forwards = 3


def _at_eps(config, eps: float) -> None:
    """train_trades_cifar10.py's 10 steps of 0.007 at ε = 0.031, as a fraction of ε, and its BN order."""
    config.method.update(step_size=eps * 0.007 / 0.031, bn_forwards=3)


# TRADES: CE(S(x)) + beta·KL_bm(σS(x) ‖ σS(x')); attack on the KL, 0.001·N start.
# bn_forwards: 2 = S(x) shared by CE and KL; 3 = the reference's S(x), S(x'), S(x) BN-update order.
# Paper schedule (train_trades_cifar10.py): 76 epochs, lr ×0.1 from (1-based) epochs 75, 90, 100; wd 2e-4.
@register("trades", defaults=dict(attack_init="normal", beta=6.0, bn_forwards=2), teachers="none",
          recipe=Recipe(schedule=(76, (74, 89, 99), 2e-4), cifar=_cifar_recipe, at_eps=_at_eps), fashion_grid=True)
def make(config, teacher_names=None) -> Method:
    del teacher_names
    beta = config.beta
    bn_forwards = config.get("bn_forwards", 2)
    if bn_forwards not in (2, 3):
        raise ValueError(f"trades bn_forwards must be 2 (S(x) shared by CE and KL) or 3 (the reference's "
                         f"S(x), S(x'), S(x) order), got {bn_forwards!r}.")
    kl_view = "nat_again" if bn_forwards == 3 else "nat"

    def outer(out: Outputs):
        ce = jnp.mean(losses.ce(out.s_nat, out.y))
        kl = trades_kl(out.s_nat if kl_view == "nat" else out.s[kl_view], out.s_adv)
        return ce + beta * kl, {"ce_nat": ce, "trades_kl": kl}

    views = ("nat", "adv", "nat_again") if bn_forwards == 3 else ("nat", "adv")
    inputs = (lambda x, x_adv: {"nat_again": x}) if bn_forwards == 3 else None
    return Method(name="trades", outer_loss=outer, inner_loss=trades_inner, inner_refs=("s_nat",),
                  attack_init=config.attack_init, attack_bn="eval", student_views=views, inputs=inputs)


# TRADES's KL: + weight·KL_bm(σS(x) ‖ σS(x')), gradient through both branches
@register_term("trades_kl", defaults=dict(weight=6.0))
def make_term(config) -> Term:
    """+ weight · KL_bm(σ S(x) ‖ σ S(x')) on any method (config: weight, 6 in TRADES)."""
    weight = config.weight

    def loss(out: Outputs):
        kl = trades_kl(out.s_nat, out.s_adv)
        return weight * kl, {"trades_kl": kl}

    return Term(name="trades_kl", loss=loss, student_views=("nat", "adv"))
