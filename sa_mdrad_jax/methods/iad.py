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
from sa_mdrad_jax.methods.ard import ard_loss
from sa_mdrad_jax.methods.base import Method, Outputs, register
from sa_mdrad_jax.methods.pgd_at import ce_inner


def introspection(out: Outputs, *, beta: float) -> jax.Array:
    """(1/B) Σ_i (1 − p_T(x')_{y_i}^β) KL(σ S(x)_i ‖ σ S(x')_i)."""
    p_t = losses.teacher_target(out.t_adv)                                     # [B,C]
    trust = jnp.take_along_axis(p_t, out.y[:, None], axis=-1)[:, 0] ** beta
    # No stop_gradient: the official IAD-I (ZFancy/IAD IAD-I.py l. 179) differentiates through the
    # clean target σS(x) as well (docs/parity.md).
    p_self = jax.nn.softmax(out.s_nat, axis=-1)
    return jnp.mean((1.0 - trust) * losses.kl_per_example(p_self, out.s_adv))


@register("iad")
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
