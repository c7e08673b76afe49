"""ARD (Goldblum et al., "Adversarially Robust Distillation", AAAI 2020), methods.md §3.

    inner:  Σ_i CE(S(x')_i, y_i), uniform start, student BN in TRAIN mode (batch statistics, and the
            running statistics updated on every attack forward, as `net.train()` does)
    outer:  α τ² kl_scale KL_bm(σ_τ T(x) ‖ σ_τ S(x')) + (1 − α) CE(S(x), y)     α = 1, τ = 30

kl_scale = 1/C reproduces the reference's `nn.KLDivLoss()` ('mean' reduction). With K > 1
teachers the target is the uniform mixture of their σ_τ (the paper has one teacher).
"""
from __future__ import annotations

import jax.numpy as jnp

from sa_mdrad_jax.methods import losses
from sa_mdrad_jax.methods.base import Method, Outputs, Recipe, register
from sa_mdrad_jax.methods.pgd_at import ce_inner


def ard_loss(out: Outputs, *, alpha: float, tau: float, kl_scale: float) -> tuple[jnp.ndarray, dict]:
    p = losses.teacher_target(out.t_nat, tau)
    kd = kl_scale * tau**2 * losses.kl_batchmean(p, out.s_adv, tau)
    ce_nat = jnp.mean(losses.ce(out.s_nat, out.y))
    return alpha * kd + (1.0 - alpha) * ce_nat, {"kd_adv": kd, "ce_nat": ce_nat}


def robust_teacher(dataset: str) -> dict:
    """ARD / IAD: an adversarially (PGD) trained WRN-34-10 teacher."""
    del dataset
    return {"wrn34_10_at": dict(name="wrn34_10")}


def cifar_recipe(config, dataset: str) -> None:
    """The reference codes' nn.KLDivLoss() 'mean' reduction: kl_scale = 1/C."""
    config.method.kl_scale = 1.0 / (10 if dataset == "cifar10" else 100)


# ARD: α τ² kl_scale KL(σ_τT(x) ‖ σ_τS(x')) + (1−α) CE(S(x)); attack BN in train mode.
# Paper schedule: 200 epochs, one decay (0.1 -> 0.01) at epoch 100, wd 2e-4 (methods.md §3).
@register("ard", defaults=dict(attack_init="uniform", attack_bn="train", alpha=1.0, tau=30.0, kl_scale=0.1),
          benchmark=False,
          recipe=Recipe(schedule=(200, (100,), 2e-4), robust_teachers=robust_teacher, cifar=cifar_recipe,
                        terms={"igdm": None}))
def make(config, teacher_names=None) -> Method:
    del teacher_names
    opts = dict(alpha=config.alpha, tau=config.tau, kl_scale=config.kl_scale)
    return Method(name="ard", outer_loss=lambda out: ard_loss(out, **opts), inner_loss=ce_inner,
                  attack_init=config.attack_init, attack_bn=config.attack_bn, teacher_views=("nat",),
                  student_views=("adv", "nat"))
