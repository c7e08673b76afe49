"""IAD-I (Zhu et al., "Reliable Adversarial Distillation with Unreliable Teachers", ICLR 2022),
methods.md §3: ARD plus the student's introspection, gated on by the epoch.

    L = L_ARD + [epoch ≥ E_0] · (1/B) Σ_i (1 − p_T(x')_{i,y_i}^β) · KL(σ S(x)_i ‖ σ S(x')_i)

β = 0.1, E_0 = 60 (0-based epoch index, i.e. from the 61st epoch). p_T(x') is the teacher's
(no-gradient) probability of the true class on the adversarial input: the less the teacher can
be trusted on x', the more the student leans on its own clean prediction. The target σ S(x) is
treated as a fixed reference (no gradient); the gradient goes through S(x'). Attack as ARD
(student BN in train mode).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from sa_mdrad_jax.methods import losses
from sa_mdrad_jax.methods.ard import ard_loss, cifar_recipe, robust_teacher
from sa_mdrad_jax.methods.base import Method, Outputs, Recipe, register
from sa_mdrad_jax.methods.pgd_at import ce_inner


def introspection(out: Outputs, *, beta: float) -> jax.Array:
    """(1/B) Σ_i (1 − p_T(x')_{y_i}^β) KL(σ S(x)_i ‖ σ S(x')_i)."""
    p_t = losses.teacher_target(out.t_adv)                                     # [B,C]
    trust = jnp.take_along_axis(p_t, out.y[:, None], axis=-1)[:, 0] ** beta
    # No stop_gradient: the official IAD-I (ZFancy/IAD IAD-I.py l. 179) differentiates through the
    # clean target σS(x) as well (docs/parity.md).
    p_self = jax.nn.softmax(out.s_nat, axis=-1)
    return jnp.mean((1.0 - trust) * losses.kl_per_example(p_self, out.s_adv))


def _scale_epochs(config, epochs: int) -> None:
    config.method.start_epoch = round(60 * epochs / 200)   # IAD's gate at epoch 60 of 200, scaled


# IAD-I: ARD + (epoch ≥ start_epoch) introspection weighted by 1 − p_T(x')_y^beta. ARD's schedule and teacher.
@register("iad", defaults=dict(attack_init="uniform", attack_bn="train", alpha=1.0, tau=30.0, kl_scale=0.1,
                               beta=0.1, start_epoch=60),
          benchmark=False,
          recipe=Recipe(schedule=(200, (100,), 2e-4), robust_teachers=robust_teacher, cifar=cifar_recipe,
                        scale_epochs=_scale_epochs, terms={"igdm": None}))
def make(config, teacher_names=None) -> Method:
    del teacher_names
    opts = dict(alpha=config.alpha, tau=config.tau, kl_scale=config.kl_scale)

    def outer(out: Outputs):
        loss, terms = ard_loss(out, **opts)
        gate = (out.step.epoch >= config.start_epoch).astype(jnp.float32)
        intro = gate * introspection(out, beta=config.beta)
        return loss + intro, {**terms, "introspection": intro}

    return Method(name="iad", outer_loss=outer, inner_loss=ce_inner, attack_init=config.attack_init,
                  attack_bn=config.attack_bn, teacher_views=("nat", "adv"), student_views=("adv", "nat"))
