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
from sa_mdrad_jax.methods.base import AttackContext, Method, Outputs, register


def adaad_inner(ctx: AttackContext, tau: float = 1.0):
    """Per-example KL(σ T(z) ‖ σ S(z)); the teacher term keeps its gradient w.r.t. z."""
    return losses.kl_per_example(losses.mean_teacher_probs(ctx.teachers(ctx.z), tau), ctx.s, tau)


@register("adaad")
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
