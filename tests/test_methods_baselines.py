"""What distinguishes each baseline (methods.md §3), pinned on hand-built inputs and tiny linear models."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sa_mdrad_jax.config import method_config
from sa_mdrad_jax.methods import AttackContext, Outputs, StepContext, make_method
from sa_mdrad_jax.methods import adaad, igdm, losses, mtard, rslad
from sa_mdrad_jax.methods import sa_mdrad as sm

B, D, C = 4, 6, 5
KEYS = jax.random.split(jax.random.PRNGKey(0), 8)
X = jax.random.uniform(KEYS[0], (B, D))
Y = jnp.array([0, 1, 2, 3])
W_S = jax.random.normal(KEYS[1], (D, C))
W_T = jax.random.normal(KEYS[2], (D, C)) * 2.0
Z = X + 0.3 * jax.random.normal(KEYS[7], (B, D))   # an attack iterate


def _method(name, **over):
    cfg = method_config(name)
    cfg.update(over)
    return make_method(cfg, ("natural", "robust"))


def _kl_sum(p_logits, q_logits):
    """Σ_i Σ_c σ(p) (log σ(p) − log σ(q)), written out."""
    p = jax.nn.softmax(p_logits, -1)
    return jnp.sum(p * (jax.nn.log_softmax(p_logits, -1) - jax.nn.log_softmax(q_logits, -1)))


def _ctx(z, w_s=W_S, w_t=W_T, **kw):
    return AttackContext(z=z, s=z @ w_s, x=X, y=Y, teachers=lambda v: (v @ w_t)[None], **kw)


# --- AdaAD ---------------------------------------------------------------------------------------
def test_adaad_attack_gradient_goes_through_both_networks_and_follows_the_teacher():
    z = Z
    grad = jax.grad(lambda z: jnp.sum(adaad.adaad_inner(_ctx(z))))(z)
    # The analytic gradient of Σ KL(σ(z W_T) ‖ σ(z W_S)) through teacher and student.
    expected = jax.grad(lambda z: _kl_sum(z @ W_T, z @ W_S))(z)
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)
    # Not the gradient with the teacher held fixed: the teacher's input-gradient is part of it.
    frozen = jax.grad(lambda z: _kl_sum(jax.lax.stop_gradient(z @ W_T), z @ W_S))(z)
    assert not np.allclose(grad, frozen, atol=1e-4)
    # Another teacher, another attack direction.
    other = jax.grad(lambda z: jnp.sum(adaad.adaad_inner(_ctx(z, w_t=-W_T))))(z)
    assert not np.allclose(grad, other, atol=1e-4)


def test_adaad_outer_loss_is_alpha_weighted_kl_on_both_views():
    s_adv, s_nat, t_adv, t_nat = (jax.random.normal(k, (B, C)) for k in KEYS[3:7])
    out = Outputs(y=Y, s_adv=s_adv, s_nat=s_nat, t_adv=t_adv[None], t_nat=t_nat[None])
    for alpha in (1.0, 0.25):
        loss, _ = _method("adaad", alpha=alpha, kl_scale=0.1).outer_loss(out)
        expected = 0.1 * (alpha * _kl_sum(t_adv, s_adv) + (1 - alpha) * _kl_sum(t_nat, s_nat)) / B
        assert float(loss) == pytest.approx(float(expected), rel=1e-5)


# --- TRADES --------------------------------------------------------------------------------------
def test_trades_outer_gradient_flows_through_the_clean_branch():
    s_nat, s_adv = jax.random.normal(KEYS[3], (B, C)), jax.random.normal(KEYS[4], (B, C))
    method = _method("trades")
    loss = lambda sn, sa: method.outer_loss(Outputs(y=Y, s_nat=sn, s_adv=sa))[0]
    g_nat = jax.grad(loss, argnums=0)(s_nat, s_adv)
    ce = lambda sn: jnp.mean(losses.ce(sn, Y))
    expected = jax.grad(lambda sn: ce(sn) + 6.0 * _kl_sum(sn, s_adv) / B)(s_nat)
    np.testing.assert_allclose(g_nat, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(g_nat, jax.grad(ce)(s_nat), atol=1e-4)   # more than the CE term
    # Its attack maximises KL(σS(x) ‖ σS(x')) from the no-gradient clean reference.
    z = Z
    inner = method.inner_loss(_ctx(z, s_nat=X @ W_S))
    np.testing.assert_allclose(jnp.sum(inner), _kl_sum(X @ W_S, z @ W_S), rtol=1e-5)
    assert method.inner_refs == ("s_nat",) and method.attack_init == "normal"


def test_trades_kl_term_composes_with_any_method():
    cfg = method_config("rslad")
    cfg.trades_kl.update(enabled=True, weight=2.0)
    method = make_method(cfg)
    s_adv, s_nat, t = (jax.random.normal(k, (B, C)) for k in KEYS[3:6])
    out = Outputs(y=Y, s_adv=s_adv, s_nat=s_nat, t_nat=t[None])
    plain, _ = make_method(method_config("rslad")).outer_loss(out)
    with_kl, terms = method.outer_loss(out)
    assert float(with_kl - plain) == pytest.approx(2.0 * float(_kl_sum(s_nat, s_adv)) / B, rel=1e-5)
    assert "trades_kl" in terms and set(method.student_views) == {"adv", "nat"}


# --- ARD / IAD -----------------------------------------------------------------------------------
def _ard_outputs(epoch):
    s_adv, s_nat, t_nat, t_adv = (jax.random.normal(k, (B, C)) for k in KEYS[3:7])
    return Outputs(y=Y, s_adv=s_adv, s_nat=s_nat, t_nat=t_nat[None], t_adv=t_adv[None],
                   step=StepContext.make(epoch=epoch))


def test_ard_outer_loss_is_the_tempered_kd_term():
    out = _ard_outputs(0)
    loss, _ = _method("ard").outer_loss(out)                     # α = 1, τ = 30, kl_scale = 0.1
    expected = 0.1 * 30.0**2 * _kl_sum(out.t_nat[0] / 30.0, out.s_adv / 30.0) / B
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    loss_half, _ = _method("ard", alpha=0.5).outer_loss(out)
    assert float(loss_half) == pytest.approx(0.5 * float(expected) + 0.5 * float(jnp.mean(losses.ce(out.s_nat, Y))),
                                             rel=1e-5)


def test_iad_introspection_is_zero_before_its_start_epoch_then_follows_the_teacher_trust():
    iad, ard = _method("iad"), _method("ard")
    before = _ard_outputs(59)
    loss, terms = iad.outer_loss(before)
    assert float(terms["introspection"]) == 0.0
    assert float(loss) == pytest.approx(float(ard.outer_loss(before)[0]), rel=1e-6)
    after = _ard_outputs(60)
    loss, terms = iad.outer_loss(after)
    p_t = jax.nn.softmax(after.t_adv[0], -1)[jnp.arange(B), Y]
    per = jax.vmap(lambda sn, sa: _kl_sum(sn[None], sa[None]))(after.s_nat, after.s_adv)
    expected = jnp.mean((1 - p_t**0.1) * per)
    assert float(terms["introspection"]) == pytest.approx(float(expected), rel=1e-5)
    assert float(loss) == pytest.approx(float(ard.outer_loss(after)[0] + expected), rel=1e-5)


# --- RSLAD ---------------------------------------------------------------------------------------
def test_rslad_targets_come_from_the_clean_teacher_output():
    method = _method("rslad")
    s_adv, s_nat, t_nat, t_adv = (jax.random.normal(k, (B, C)) for k in KEYS[3:7])
    out = Outputs(y=Y, s_adv=s_adv, s_nat=s_nat, t_nat=t_nat[None], t_adv=t_adv[None])
    loss, _ = method.outer_loss(out)
    expected = 0.1 * (5 / 6 * _kl_sum(t_nat, s_adv) + 1 / 6 * _kl_sum(t_nat, s_nat)) / B
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert float(method.outer_loss(out._replace(t_adv=-t_adv[None]))[0]) == float(loss)   # T(x') unused
    assert method.teacher_views == ("nat",) and method.inner_refs == ("t_nat",)
    # The attack target is T(x) too, not the teacher at the iterate.
    z = Z
    ctx = _ctx(z, t_nat=(X @ W_T)[None])
    np.testing.assert_allclose(jnp.sum(method.inner_loss(ctx)), _kl_sum(X @ W_T, z @ W_S), rtol=1e-5)
    assert float(jnp.sum(method.inner_loss(ctx._replace(teachers=lambda v: -v @ W_T)))) == pytest.approx(
        float(jnp.sum(method.inner_loss(ctx))))


# --- MTARD ---------------------------------------------------------------------------------------
def _official_balance(sequence, eta, decays_at=()):
    """MTARD's reference loop (mtard_resnet18_cifar10.py), in plain Python floats."""
    w_nat, l0_adv, l0_nat, out = 0.5, None, None, []
    for i, (l_adv, l_nat) in enumerate(sequence):
        if i in decays_at:
            eta *= 0.1
        l0_adv = l_adv if l0_adv is None else l0_adv
        l0_nat = l_nat if l0_nat is None else l0_nat
        r_adv, r_nat = l_adv / l0_adv, l_nat / l0_nat
        w_nat = w_nat - eta * (w_nat - r_nat / (r_adv + r_nat))
        out.append(w_nat)
    return out


def test_mtard_weights_follow_the_balance_rule_over_a_scripted_loss_sequence():
    method = _method("mtard")
    sequence = [(2.0, 1.0), (1.0, 1.0), (0.5, 0.9), (0.4, 0.2), (0.3, 0.6), (0.2, 0.5)]
    state, got = method.init_state(), []
    for i, (l_adv, l_nat) in enumerate(sequence):
        decays = int(i >= 3)   # one LR decay before the 4th step: η × 0.1
        state = method.update_state(state, {"adv": jnp.float32(l_adv), "nat": jnp.float32(l_nat)},
                                    StepContext.make(lr_decays=decays))
        got.append(float(state["w_nat"]))
    np.testing.assert_allclose(got, _official_balance(sequence, 0.025, decays_at=(3,)), rtol=1e-6)
    assert float(state["loss0_adv"]) == 2.0 and float(state["loss0_nat"]) == 1.0
    assert got[1] > got[0]   # the adversarial loss fell faster: weight moves to the natural branch


def test_mtard_outer_loss_uses_this_steps_weights_and_the_named_teachers():
    cfg = method_config("mtard")
    cfg.update(robust_teacher="wrn34_10_trades", natural_teacher="resnet56")
    method = make_method(cfg, ("resnet56", "wrn34_10_trades"))
    assert method.view_teachers == {"adv": (1,), "nat": (0,)}
    s_adv, s_nat, t_adv, t_nat = (jax.random.normal(k, (B, C)) for k in KEYS[3:7])
    state = {**mtard.balance_init(), "w_nat": jnp.float32(0.2)}
    out = Outputs(y=Y, s_adv=s_adv, s_nat=s_nat, t_adv=t_adv[None], t_nat=t_nat[None], state=state)
    loss, terms = method.outer_loss(out)
    expected = 0.8 * 0.1 * _kl_sum(t_adv, s_adv) / B + 0.2 * 0.1 * _kl_sum(t_nat, s_nat) / B
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(ValueError, match="robust_teacher=.wrn34_10_trades. is not a teacher .* Valid: a, b"):
        make_method(cfg, ("a", "b"))


# --- IGDM ----------------------------------------------------------------------------------------
def _igdm_loss(x, x_adv, epoch, w_t=W_T, **cfg):
    block = method_config("adaad").igdm
    block.update(cfg)
    term = igdm.make_term(block)
    views = term.inputs(x, x_adv)
    flat = lambda v: v.reshape(v.shape[0], -1)
    out = Outputs(y=Y, s={k: flat(v) @ W_S for k, v in views.items()},
                  t={k: (flat(v) @ w_t)[None] for k, v in views.items()}, step=StepContext.make(epoch=epoch))
    return term.loss(out)


def test_igdm_is_zero_without_perturbation_and_ramps_with_the_epoch():
    value, _ = _igdm_loss(X, X, epoch=50)
    assert float(value) == 0.0
    x_adv = jnp.clip(X + 0.03 * jnp.sign(jax.random.normal(KEYS[5], X.shape)), 0, 1)
    v0, t0 = _igdm_loss(X, x_adv, epoch=0)
    v9, t9 = _igdm_loss(X, x_adv, epoch=9)
    assert float(t0["igdm_kl"]) > 0 and float(t9["igdm_kl"]) == float(t0["igdm_kl"])
    assert float(v0) == pytest.approx(20.0 * 1 / 200 * float(t0["igdm_kl"]), rel=1e-6)   # 1-based epoch
    assert float(v9) == pytest.approx(10 * float(v0), rel=1e-5)
    assert float(_igdm_loss(X, x_adv, epoch=9, e_ref=100.0)[0]) == pytest.approx(2 * float(v9), rel=1e-5)
    # The logit-difference KL, written out.
    d = x_adv - X
    expected = _kl_sum((X + d) @ W_T - (X - d) @ W_T, (X + d) @ W_S - (X - d) @ W_S) / B
    assert float(t0["igdm_kl"]) == pytest.approx(float(expected), rel=1e-5)


def test_igdm_negative_view_is_not_clipped():
    x = jnp.full((1, 3), 0.99)
    x_adv = jnp.full((1, 3), 0.96)          # δ = −0.03
    views = igdm.igdm_inputs(x, x_adv, beta=1.0, gamma=1.0)
    np.testing.assert_allclose(views[igdm.NEG], 1.02, rtol=1e-6)     # x − γδ > 1, kept
    np.testing.assert_allclose(views[igdm.POS], 0.96, rtol=1e-6)
    views = igdm.igdm_inputs(x, x_adv, beta=2.0, gamma=0.5)
    np.testing.assert_allclose(views[igdm.POS], 0.93, rtol=1e-6)
    np.testing.assert_allclose(views[igdm.NEG], 1.005, rtol=1e-6)


def test_igdm_composes_and_averages_several_teachers():
    cfg = method_config("sa_mdrad")
    cfg.igdm.enabled = True
    method = make_method(cfg)
    assert method.name == "sa_mdrad+igdm" and {igdm.POS, igdm.NEG} <= set(method.student_views)
    t_pos, t_neg = jax.random.normal(KEYS[3], (2, B, C)), jax.random.normal(KEYS[4], (2, B, C))
    s_pos, s_neg = jax.random.normal(KEYS[5], (B, C)), jax.random.normal(KEYS[6], (B, C))
    mix = (jax.nn.softmax(t_pos[0] - t_neg[0]) + jax.nn.softmax(t_pos[1] - t_neg[1])) / 2
    assert float(igdm.igdm_kl(s_pos, s_neg, t_pos, t_neg)) == pytest.approx(
        float(losses.kl_batchmean(mix, s_pos - s_neg)), rel=1e-6)
    with pytest.raises(ValueError, match="e_ref"):
        _igdm_loss(X, X, 0, e_ref=0.0)


# --- SA-MDRAD's attack losses, branch balance, stages --------------------------------------------
T2 = jnp.stack([X @ W_T, X @ (W_T[:, ::-1])])      # two teachers on x, [2,B,C]


def test_sa_mdrad_attack_losses():
    z = Z
    ctx = AttackContext(z=z, s=z @ W_S, x=X, y=Y, teachers=lambda v: jnp.stack([v @ W_T, v @ W_T[:, ::-1]]),
                        s_nat=X @ W_S, t_nat=T2)
    ce = _method("sa_mdrad").inner_loss(ctx)
    np.testing.assert_allclose(ce, losses.ce(z @ W_S, Y), rtol=1e-6)
    clean = _method("sa_mdrad", attack_loss="kl_fused_clean")
    assert clean.inner_refs == ("t_nat",)
    p_nat, _ = sm.sample_adaptive_target(T2, Y, tau=4.0)
    np.testing.assert_allclose(clean.inner_loss(ctx), losses.kl_per_example(p_nat, z @ W_S, 4.0), rtol=1e-5)
    clean_t1 = _method("sa_mdrad", attack_loss="kl_fused_clean", attack_tau=1.0)
    p_nat1, _ = sm.sample_adaptive_target(T2, Y, tau=1.0)
    np.testing.assert_allclose(clean_t1.inner_loss(ctx), losses.kl_per_example(p_nat1, z @ W_S), rtol=1e-5)
    trades = _method("sa_mdrad", attack_loss="trades")
    np.testing.assert_allclose(jnp.sum(trades.inner_loss(ctx)), _kl_sum(X @ W_S, z @ W_S), rtol=1e-5)
    # 'kl_fused_adv': the fused rectified target of the teachers at z, with gradient through them.
    adv = _method("sa_mdrad", attack_loss="kl_fused_adv")
    g = jax.grad(lambda z: jnp.sum(adv.inner_loss(ctx._replace(z=z, s=z @ W_S))))(z)

    def held(z):   # the same target with the teachers' gradient removed
        p, _ = sm.sample_adaptive_target(ctx.teachers(z), Y, tau=4.0)
        return jnp.sum(losses.kl_per_example(p, z @ W_S, 4.0))
    np.testing.assert_allclose(jnp.sum(adv.inner_loss(ctx)), held(z), rtol=1e-5)   # same value
    assert not np.allclose(g, jax.grad(held)(z), atol=1e-5)                          # other gradient
    with pytest.raises(ValueError, match="kl_fused_adv"):
        _method("sa_mdrad", attack_loss="kl")


def test_sa_mdrad_mtard_branch_balance_reweights_the_two_branches():
    s_adv, s_nat = jax.random.normal(KEYS[3], (B, C)), jax.random.normal(KEYS[4], (B, C))
    out = Outputs(y=Y, s_adv=s_adv, s_nat=s_nat, t_adv=T2 * 1.5, t_nat=T2)
    fixed = _method("sa_mdrad", beta=0.0, gamma=0.5)
    balanced = _method("sa_mdrad", beta=0.0, gamma=0.5, branch_weights="mtard")
    assert fixed.init_state is None and balanced.init_state is not None
    _, terms = fixed.outer_loss(out)
    state = {**balanced.init_state(), "w_nat": jnp.float32(0.3)}
    loss, bterms = balanced.outer_loss(out._replace(state=state))
    # The balance weighs the two distillation branches; the hard-label term γ·CE(s_adv, y) stays outside it.
    assert float(loss) == pytest.approx(0.7 * float(terms["kl_adv"]) + 0.3 * float(terms["kl_nat"])
                                        + 0.5 * float(terms["ce_adv"]), rel=1e-5)
    assert float(bterms["balance_w_nat"]) == pytest.approx(0.3)
    seen = balanced.state_inputs(out._replace(state=state))
    assert float(seen["adv"]) == pytest.approx(float(terms["kl_adv"]), rel=1e-6)


def test_sa_mdrad_feature_loss_averages_the_distilled_stages():
    w = jnp.full((2, B), 0.5)
    one = [jnp.ones((B, 2, 2, 3)), jnp.ones((B, 2, 2, 3))]
    zero = [jnp.zeros((B, 2, 2, 3)), jnp.zeros((B, 2, 2, 3))]
    assert float(sm.staged_feature_loss(zero, one, w)) == pytest.approx(1.0)        # flat list = one stage
    assert float(sm.staged_feature_loss([zero, one], [one, one], w)) == pytest.approx(0.5)
    method = _method("sa_mdrad", feature_stages=("stage2", "final"))
    assert method.feature_stages == ("stage2", "final") and method.connectors
    with pytest.raises(ValueError, match="feature_stages"):
        _method("sa_mdrad", feature_stages=())


def test_feature_stage_connectors_are_checked_against_the_networks():
    from sa_mdrad_jax import models
    from sa_mdrad_jax.train import distill_step
    shapes = lambda name: distill_step.feature_shapes(models.get_model(name, num_classes=10), (8, 8, 3))
    specs = distill_step.make_connectors(shapes("resnet_tiny"), [shapes("resnet_tiny"), shapes("wrn_tiny")],
                                         stages=("stage2", "final"))
    assert [s.key for s in specs] == ["t0_stage2", "t1_stage2", "t0", "t1"]
    assert specs[1].module.out_channels == shapes("wrn_tiny")["stage2"][-1]
    with pytest.raises(ValueError, match="stage9"):
        distill_step.make_connectors(shapes("resnet_tiny"), [shapes("wrn_tiny")], stages=("stage9",))
