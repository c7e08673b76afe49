"""IGDM (Lee et al., "Indirect Gradient Distillation Module for Adversarial Distillation"),
methods.md §3: a term added to any method, matching the change of the output between x + βδ
and x − γδ (an indirect match of the input gradients):

    δ = stop_gradient(x' − x)
    L_IGDM = α · (e / E_ref) · KL_bm( σ(T(x + βδ) − T(x − γδ)) ‖ σ(S(x + βδ) − S(x − γδ)) )

α = 20, β = γ = 1, E_ref = 200 (fixed in the reference even for shorter runs). x − γδ is NOT
clipped to [0, 1], as in the reference. e is the 1-based epoch number (the reference counts
epochs from 1), i.e. `StepContext.epoch + 1`. Softmaxes are of logit DIFFERENCES. Student
forwards in train mode with gradient; teachers frozen, eval mode.

K > 1 teachers (SA-MDRAD+IGDM): the target is the uniform mixture Σ_k σ(T_k(x+βδ) − T_k(x−γδ)) / K;
with one teacher it is the reference's term.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from sa_mdrad_jax.methods import losses
from sa_mdrad_jax.methods.base import Outputs, Term, TermRecipe, register_term

POS, NEG = "igdm_pos", "igdm_neg"


def igdm_inputs(x: jax.Array, x_adv: jax.Array, *, beta: float = 1.0, gamma: float = 1.0) -> dict:
    """The two views {x + βδ, x − γδ}, unclipped."""
    delta = jax.lax.stop_gradient(x_adv - x)
    return {POS: x + beta * delta, NEG: x - gamma * delta}


def igdm_kl(s_pos, s_neg, t_pos, t_neg) -> jax.Array:
    """KL_bm(mean_k σ(T_k+ − T_k−) ‖ σ(S+ − S−)); t_* are [K,B,C]."""
    return losses.kl_batchmean(losses.teacher_target(t_pos - t_neg), s_pos - s_neg)


def ramp(epoch, alpha: float, e_ref: float) -> jax.Array:
    """α · e / E_ref with e the 1-based epoch."""
    return alpha * (jnp.asarray(epoch, jnp.float32) + 1.0) / e_ref


def _cifar_recipe(config, dataset: str) -> None:
    del dataset
    config.method.igdm.enabled = True      # α = 20, β = γ = 1, E_ref = 200 (the reference)
    # The IGDM authors' scripts, read side by side with the base methods' (IGDM repository):
    # weight decay 2e-4 for every base (AdaAD's own code uses 5e-4); a base's own differences are
    # its Recipe.terms['igdm'].
    config.optim.weight_decay = 2e-4


def _digits_recipe(config) -> None:
    config.method.igdm.enabled = True
    # The ramp spans the run, as the reference's E_ref = 200 spans its 200 epochs (with 200 here the
    # weight would stay below α·epochs/200, a tenth of α over a few epochs).
    config.method.igdm.e_ref = float(config.train.epochs)


# IGDM: + α·(epoch/E_ref)·KL_bm(σ(T(x+βδ) − T(x−γδ)) ‖ σ(S(x+βδ) − S(x−γδ)));
# the paper's headline base is AdaAD.
@register_term("igdm", defaults=dict(alpha=20.0, beta=1.0, gamma=1.0, e_ref=200.0),
               recipe=TermRecipe(default_base="adaad", cifar=_cifar_recipe, digits=_digits_recipe))
def make_term(config) -> Term:
    """config: alpha, beta, gamma, e_ref."""
    alpha, beta, gamma, e_ref = config.alpha, config.beta, config.gamma, config.e_ref
    if e_ref <= 0:
        raise ValueError(f"igdm.e_ref must be a positive epoch count, got {e_ref}.")

    def loss(out: Outputs):
        kl = igdm_kl(out.s[POS], out.s[NEG], out.t[POS], out.t[NEG])
        weight = ramp(out.step.epoch, alpha, e_ref)
        return weight * kl, {"igdm_kl": kl, "igdm": weight * kl}

    return Term(name="igdm", loss=loss, student_views=(POS, NEG), teacher_views=(POS, NEG),
                inputs=lambda x, x_adv: igdm_inputs(x, x_adv, beta=beta, gamma=gamma))
