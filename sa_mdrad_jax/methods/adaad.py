"""AdaAD (Huang et al., "Boosting Accuracy and Robustness of Student Models via Adaptive
Adversarial Distillation", CVPR 2023), methods.md §3.

    inner:  Σ_i KL(σ T(x')_i ‖ σ S(x')_i), differentiated w.r.t. x' through the teacher AND the
            student (a teacher forward and input-gradient every attack step), 0.001·N start, BN eval
    outer:  kl_scale · [α KL_bm(σ T(x') ‖ σ S(x')) + (1 − α) KL_bm(σ T(x) ‖ σ S(x))]    α = 1

The official code's `nn.KLDivLoss()` ('mean' reduction) is kl_scale = 1/C. With K > 1 teachers
the target is the uniform mixture of their σ (the paper has one teacher).
"""
from __future__ import annotations

from sa_mdrad_jax.methods import losses
from sa_mdrad_jax.methods.base import AttackContext, Method, Outputs, Recipe, register


def adaad_inner(ctx: AttackContext, tau: float = 1.0):
    """Per-example KL(σ T(z) ‖ σ S(z)); the teacher term keeps its gradient w.r.t. z."""
    return losses.kl_per_example(losses.mean_teacher_probs(ctx.teachers(ctx.z), tau), ctx.s, tau)


def _robust_teacher(dataset: str) -> dict:
    """AdaAD: robust WRN-34-20 (CIFAR-10) / WRN-34-10 (CIFAR-100) of Huang et al. 2021 (arXiv:2111.02331).
    The zoo's WRN-34-20 is wrn34_10 at width 2 (its stem has 32 channels, the paper's 16), so importing
    the published WRN-34-20 weights needs a zoo entry of its own."""
    if dataset == "cifar10":
        return {"wrn34_20_robust": dict(name="wrn34_10", width=2.0)}
    return {"wrn34_10_robust": dict(name="wrn34_10")}


def _cifar_recipe(config, dataset: str) -> None:
    # CIFAR-10: the official code's nn.KLDivLoss() 'mean' reduction (1/C); AdaAD main.py l. 347-351:
    # the CIFAR-100 branch is batchmean.
    config.method.kl_scale = 1.0 / 10 if dataset == "cifar10" else 1.0


def _igdm_recipe(config, dataset: str) -> None:
    # AdaAD+IGDM follows the IGDM code: batchmean for both the AdaAD KL and the IGDM term on CIFAR-10
    # as on CIFAR-100 (AdaAD's own CIFAR-10 code uses 'mean', i.e. ×1/10); plain AdaAD its own (docs/parity.md).
    del dataset
    config.method.kl_scale = 1.0


# AdaAD: attack on KL(σT(x') ‖ σS(x')) through both networks; kl_scale 0.1 = 'mean' on 10 classes.
# Paper schedule (official code): 200 epochs, ×0.1 after 100 and 150, wd 5e-4. The paper grids also run AdaAD+IGDM.
@register("adaad", defaults=dict(attack_init="normal", tau=1.0, kl_scale=0.1, alpha=1.0), grid_terms=("igdm",),
          fashion_grid=True,
          recipe=Recipe(schedule=(200, (100, 150), 5e-4), robust_teachers=_robust_teacher, cifar=_cifar_recipe,
                        terms={"igdm": _igdm_recipe}))
def make(config, teacher_names=None) -> Method:
    del teacher_names
    kl_scale, tau, alpha = config.kl_scale, config.tau, config.alpha

    def outer(out: Outputs):
        kl_adv = kl_scale * tau**2 * losses.kl_batchmean(losses.teacher_target(out.t_adv, tau), out.s_adv, tau)
        kl_nat = kl_scale * tau**2 * losses.kl_batchmean(losses.teacher_target(out.t_nat, tau), out.s_nat, tau)
        return alpha * kl_adv + (1.0 - alpha) * kl_nat, {"kl_adv": kl_adv, "kl_nat": kl_nat}

    return Method(name="adaad", outer_loss=outer, inner_loss=lambda c: adaad_inner(c, tau), inner_teachers=True,
                  attack_init=config.attack_init, attack_bn="eval", teacher_views=("adv", "nat"),
                  student_views=("adv", "nat"))
