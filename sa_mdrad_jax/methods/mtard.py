"""MTARD (Zhao et al., "Enhanced Accuracy and Robustness via Multi-Teacher Adversarial
Distillation", ECCV 2022), methods.md §3.

Two teachers: a robust (adversarially trained) one distilled on x', a natural one on x:

    L = w_adv · kl_scale · KL_bm(σ T_rob(x') ‖ σ S(x')) + w_nat · kl_scale · KL_bm(σ T_nat(x) ‖ σ S(x))

Inner loss CE(S(x'), y), 0.001·N start, student BN eval. The weights follow MTARD's normalised
loss balance (`balance_update`), method state updated every step without gradient, in the
official order: this step's losses update the weights, which then weigh this step's loss.
"""
from __future__ import annotations

import jax.numpy as jnp

from sa_mdrad_jax.methods import losses
from sa_mdrad_jax.methods.base import Method, Outputs, Recipe, register, teacher_index
from sa_mdrad_jax.methods.rslad import SCHEDULE, robust_teacher


# --- the adaptive balance (also SA-MDRAD's branch_weights='mtard') --------------------------------
def balance_init(w_nat: float = 0.5) -> dict:
    """Start at w_adv = w_nat = 0.5; the first-step losses are recorded on the first update."""
    return {"w_nat": jnp.float32(w_nat), "loss0_adv": jnp.float32(0.0), "loss0_nat": jnp.float32(0.0),
            "started": jnp.int32(0)}


def balance_eta(eta0: float, lr_decays) -> jnp.ndarray:
    """η = η0 · 0.1^(number of LR decays so far): MTARD multiplies η by 0.1 at each LR decay."""
    return eta0 * jnp.power(jnp.float32(0.1), jnp.asarray(lr_decays, jnp.float32))


def balance_update(state: dict, loss_adv, loss_nat, eta) -> dict:
    """One step of MTARD's normalised loss balance (no gradient):

        L_j0 = the first step's L_j;  r_j = L_j / L_j0;  target = r_nat / (r_adv + r_nat)
        w_nat ← w_nat − η (w_nat − target);  w_adv = 1 − w_nat
    """
    first = state["started"] == 0
    l0_adv = jnp.where(first, loss_adv, state["loss0_adv"])
    l0_nat = jnp.where(first, loss_nat, state["loss0_nat"])
    r_adv, r_nat = loss_adv / l0_adv, loss_nat / l0_nat
    target = r_nat / (r_adv + r_nat)
    w_nat = state["w_nat"] - eta * (state["w_nat"] - target)
    return {"w_nat": w_nat.astype(jnp.float32), "loss0_adv": l0_adv.astype(jnp.float32),
            "loss0_nat": l0_nat.astype(jnp.float32), "started": jnp.int32(1)}


def balance_method_hooks(eta0: float, branch_losses):
    """(init_state, state_inputs, update_state) of a method balanced by MTARD's rule;
    `branch_losses(out) -> (L_adv, L_nat)`."""
    def state_inputs(out: Outputs):
        l_adv, l_nat = branch_losses(out)
        return {"adv": l_adv, "nat": l_nat}

    def update_state(state, seen, step):
        return balance_update(state, seen["adv"], seen["nat"], balance_eta(eta0, step.lr_decays))

    return balance_init, state_inputs, update_state


# MTARD: robust teacher on x', natural teacher on x, MTARD balance (η = balance_lr).
# robust_teacher / natural_teacher name entries of the `teachers` block. RSLAD's schedule and robust teacher;
# the natural teacher (the official script instantiates a WRN-34-10 for both) comes from the teacher command.
@register("mtard", defaults=dict(attack_init="normal", tau=1.0, kl_scale=0.1, balance_lr=0.025,
                                 robust_teacher="robust", natural_teacher="natural"),
          teachers="robust+natural", recipe=Recipe(schedule=SCHEDULE, robust_teachers=robust_teacher,
                                                   terms={"igdm": None}))
def make(config, teacher_names=None) -> Method:
    """config: robust_teacher / natural_teacher (names in the `teachers` block, or indices),
    kl_scale, tau, balance_lr (η0), attack_init."""
    rob = teacher_index(config.robust_teacher, teacher_names, "method.robust_teacher")
    nat = teacher_index(config.natural_teacher, teacher_names, "method.natural_teacher")
    if rob == nat:
        raise ValueError("MTARD needs two different teachers: method.robust_teacher and method.natural_teacher "
                         f"both name teacher {rob}.")
    kl_scale, tau = config.kl_scale, config.tau

    def branch_losses(out: Outputs):
        l_adv = kl_scale * tau**2 * losses.kl_batchmean(losses.softmax_target(out.t_adv[0], tau), out.s_adv, tau)
        l_nat = kl_scale * tau**2 * losses.kl_batchmean(losses.softmax_target(out.t_nat[0], tau), out.s_nat, tau)
        return l_adv, l_nat

    def outer(out: Outputs):
        l_adv, l_nat = branch_losses(out)
        w_nat = out.state["w_nat"]
        loss = (1.0 - w_nat) * l_adv + w_nat * l_nat
        return loss, {"kl_adv": l_adv, "kl_nat": l_nat, "balance_w_nat": w_nat}

    init, state_inputs, update = balance_method_hooks(config.balance_lr, branch_losses)
    return Method(name="mtard", outer_loss=outer, inner_loss=lambda c: losses.ce(c.s, c.y),
                  attack_init=config.attack_init, attack_bn="eval", teacher_views=("adv", "nat"),
                  student_views=("adv", "nat"), view_teachers={"adv": (rob,), "nat": (nat,)},
                  init_state=init, state_inputs=state_inputs, update_state=update)
