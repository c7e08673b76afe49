"""What "sample-adaptive" must be observable as (methods.md §4), on hand-built logits."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sa_mdrad_jax import models
from sa_mdrad_jax.methods import sa_mdrad as sm

Y = jnp.array([0, 1, 2])
# Teacher 0: right on samples 0 and 1, wrong on 2. Teacher 1: wrong on 0, right on 1 and 2.
T = jnp.array([
    [[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, 0.5], [0.2, 0.1, 0.0, 4.0]],
    [[0.5, 2.5, 0.0, 0.0], [0.0, 3.0, 0.0, 0.0], [0.0, 0.0, 5.0, 1.0]],
])


T_NAT = 0.3 * T  # the clean view: same predictions, less confident


def test_rect_swaps_only_wrong_samples_and_keeps_other_entries():
    r = sm.rect_swap(T, Y)
    np.testing.assert_array_equal(r[0, 0], T[0, 0])        # right: unchanged
    np.testing.assert_array_equal(r[0, 1], T[0, 1])
    np.testing.assert_array_equal(r[0, 2], np.float32([0.2, 0.1, 4.0, 0.0]))   # swap 2<->3, others kept
    np.testing.assert_array_equal(r[1, 0], np.float32([2.5, 0.5, 0.0, 0.0]))   # swap 0<->1, others kept
    assert bool(jnp.all(jnp.argmax(r, -1) == Y))                # every rectified teacher is right
    np.testing.assert_allclose(jnp.sort(r, -1), jnp.sort(T, -1))  # a permutation of the same values


def test_caw_sums_to_one_and_gives_least_weight_to_highest_ce():
    t = jnp.stack([T[0], T[1], jnp.zeros_like(T[0])])          # K = 3
    w = sm.caw(t, Y)
    np.testing.assert_allclose(w.sum(0), 1.0, rtol=1e-6)
    ce = sm.per_teacher_ce(t, Y)
    np.testing.assert_array_equal(jnp.argmin(w, 0), jnp.argmax(ce, 0))
    np.testing.assert_array_equal(jnp.argmax(w, 0), jnp.argmin(ce, 0))


def test_caw_is_uniform_for_identical_teachers_and_one_for_a_single_teacher():
    same = jnp.stack([T[0]] * 3)
    np.testing.assert_allclose(sm.caw(same, Y), 1 / 3, rtol=1e-6)
    np.testing.assert_allclose(sm.caw(T[:1], Y), 1.0)


def test_weights_come_from_raw_logits_not_rectified_ones():
    _, w = sm.sample_adaptive_target(T, Y, weighting="ca", rectify="swap")
    np.testing.assert_allclose(w, sm.caw(T, Y), rtol=1e-6)
    assert not np.allclose(w, sm.caw(sm.rect_swap(T, Y), Y))  # rectified logits would weigh differently
    # On sample 2 teacher 0 is wrong: it must keep the smaller weight even though its swap looks confident.
    assert float(w[0, 2]) < float(w[1, 2])


def test_fused_kl_and_weighted_per_teacher_kl_have_equal_student_gradients():
    s = jax.random.normal(jax.random.PRNGKey(0), (3, 4))
    probs, w = sm.rectified_probs(T, Y, sm.caw(T, Y), rule="swap", tau=4.0)
    fused = lambda s: sm.kl_batchmean(sm.fuse(probs, w), s, 4.0)
    def weighted(s):  # mean_i Σ_k w_ki KL(p_ki ‖ q_i)
        per = jnp.stack([jax.vmap(lambda p, z: sm.kl_batchmean(p[None], z[None], 4.0))(probs[k], s)
                         for k in range(2)])
        return jnp.mean(jnp.sum(w * per, 0))
    np.testing.assert_allclose(jax.grad(fused)(s), jax.grad(weighted)(s), atol=1e-6)
    assert not np.allclose(fused(s), weighted(s))  # the values differ (entropy terms); gradients do not


def test_kl_batchmean_is_the_mean_per_sample_kl():
    p = jnp.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    s = jnp.log(jnp.array([[0.25, 0.25, 0.5], [0.5, 0.25, 0.25]]))
    expected = (0.5 * np.log(2) * 2 + np.log(2)) / 2
    assert float(sm.kl_batchmean(p, s)) == pytest.approx(expected, rel=1e-6)


def _loss(**kw):
    base = dict(s_adv=jnp.zeros((3, 4)), s_nat=jnp.zeros((3, 4)), t_adv=T, t_nat=T_NAT, y=Y)
    base.update(kw)
    return sm.outer_loss(**base)


def test_rectification_options_move_the_target_towards_the_label():
    p_none, _ = sm.sample_adaptive_target(T, Y, rectify="none")
    p_swap, _ = sm.sample_adaptive_target(T, Y, rectify="swap")
    p_soft, _ = sm.sample_adaptive_target(T, Y, rectify="soft", rho=1.0)
    p_drop, w_drop = sm.sample_adaptive_target(T, Y, rectify="drop")
    on_label = lambda p: p[jnp.arange(3), Y]
    assert bool(jnp.all(on_label(p_swap) >= on_label(p_none) - 1e-7))
    assert float(on_label(p_swap)[0]) > float(on_label(p_none)[0])      # sample 0: teacher 1 was wrong
    assert bool(jnp.all(jnp.argmax(p_soft, -1) == Y))
    np.testing.assert_allclose(w_drop[:, 0], [1.0, 0.0])                 # wrong teacher dropped
    np.testing.assert_allclose(w_drop[:, 1], sm.caw(T, Y)[:, 1], rtol=1e-6)  # both right: unchanged
    np.testing.assert_allclose(p_drop[0], jax.nn.softmax(T[0, 0] / 4.0), rtol=1e-6)
    # A student predicting the labels is closer to rectified targets than to raw ones.
    good = 5.0 * jax.nn.one_hot(Y, 4)
    assert float(_loss(s_adv=good, s_nat=good, rectify="swap")[0]) < float(_loss(s_adv=good, s_nat=good, rectify="none")[0])


def test_weighting_and_temperature_options():
    _, w_u = sm.sample_adaptive_target(T, Y, weighting="uniform")
    np.testing.assert_allclose(w_u, 0.5)
    _, w_sharp = sm.sample_adaptive_target(T, Y, weighting="softmax_neg_ce", weight_temperature=0.1)
    _, w_soft = sm.sample_adaptive_target(T, Y, weighting="softmax_neg_ce", weight_temperature=10.0)
    assert float(jnp.abs(w_sharp - 0.5).mean()) > float(jnp.abs(w_soft - 0.5).mean())
    entropy = lambda p: float(-jnp.sum(p * jnp.log(p + 1e-12)))
    p_hot, _ = sm.sample_adaptive_target(T, Y, tau=1.0)
    p_warm, _ = sm.sample_adaptive_target(T, Y, tau=8.0)
    assert entropy(p_warm) > entropy(p_hot)


def test_scales_branches_and_ce_term():
    l1, terms = _loss(gamma=0.0)
    l2, _ = _loss(kl_scale=0.2, gamma=0.0)
    assert float(l2) == pytest.approx(2 * float(l1), rel=1e-6)
    l_adv_only, _ = _loss(lambda_adv=1.0, lambda_nat=0.0, gamma=0.0)
    assert float(l_adv_only) == pytest.approx(float(terms["kl_adv"]), rel=1e-6)
    l_ce, t_ce = _loss(gamma=1.0)
    assert float(l_ce - l1) == pytest.approx(float(t_ce["ce_adv"]), rel=1e-6)


def test_teacher_input_options_choose_where_the_adversarial_target_comes_from():
    s = jax.random.normal(jax.random.PRNGKey(1), (3, 4))
    _, adv = _loss(s_adv=s, teacher_input_adv="adv")
    _, clean = _loss(s_adv=s, teacher_input_adv="clean")
    _, hybrid = _loss(s_adv=s, teacher_input_adv="hybrid")
    p_nat, w_nat = sm.sample_adaptive_target(T_NAT, Y)
    assert float(clean["kl_adv"]) == pytest.approx(float(sm.distill_kl(p_nat, s, tau=4.0, kl_scale=0.1)), rel=1e-6)
    np.testing.assert_allclose(hybrid["w_adv"], sm.caw(T, Y), rtol=1e-6)   # weights from x'
    assert float(adv["kl_adv"]) != pytest.approx(float(clean["kl_adv"]))
    with pytest.raises(ValueError, match="adv, clean, hybrid"):
        _loss(teacher_input_adv="both")


def test_feature_term_uses_nat_weights_beta_and_warmup():
    f_t = [jnp.ones((3, 2, 2, 5)), jnp.zeros((3, 4, 4, 6))]
    mapped = [jnp.zeros((3, 2, 2, 5)), jnp.zeros((3, 4, 4, 6))]
    kw = dict(mapped_adv=mapped, mapped_nat=mapped, teacher_feats=f_t)
    l_on, terms = _loss(beta=1.0, **kw)
    l_off, _ = _loss(beta=0.0, **kw)
    l_warm, _ = _loss(beta=1.0, feature_weight=0.0, **kw)
    # teacher 0's map differs by 1 everywhere, teacher 1's not at all: L_F = mean_i w_nat[0, i]
    np.testing.assert_allclose(terms["feat_adv"], jnp.mean(terms["w_nat"][0]), rtol=1e-6)
    assert float(l_on - l_off) == pytest.approx(float(terms["feat_adv"]), rel=1e-5)  # λ_adv + λ_nat = 1
    assert float(l_warm) == pytest.approx(float(l_off), rel=1e-6)
    m = jax.random.normal(jax.random.PRNGKey(0), (3, 2, 2, 5))
    f = jax.random.normal(jax.random.PRNGKey(1), (3, 2, 2, 5))
    d = sm.feature_distance(m, f, "normalized_mse")
    np.testing.assert_allclose(sm.feature_distance(3.0 * m, f, "normalized_mse"), d, rtol=1e-5)  # scale-free
    assert not np.allclose(sm.feature_distance(3.0 * m, f, "mse"), sm.feature_distance(m, f, "mse"))
    g = jax.grad(lambda m: sm.feature_loss([m], [f], terms["w_nat"][:1], "normalized_mse"))(m)
    assert float(jnp.abs(g).sum()) > 0


STUDENTS = ("resnet18", "mobilenetv2")
TEACHERS = ("resnet18", "resnet34", "resnet50", "preact_resnet18", "wrn34_10", "wrn28_10", "wrn16_4",
            "mobilenetv2", "vgg16_bn", "densenet121")


@functools.lru_cache(maxsize=None)
def _final_shape(name: str) -> tuple:
    model = models.get_model(name, num_classes=10)
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    out = jax.eval_shape(lambda x: model.init_with_output(jax.random.PRNGKey(0), x, train=False)[0], x)
    return tuple(out[1]["final"].shape)


@pytest.mark.parametrize("student", STUDENTS)
def test_connectors_map_every_student_teacher_feature_pair_in_the_zoo(student):
    s_shape = _final_shape(student)
    for teacher in TEACHERS:
        t_shape = _final_shape(teacher)
        conn = sm.Connector(out_channels=t_shape[-1], out_size=t_shape[1:3])
        f = jax.ShapeDtypeStruct(s_shape, jnp.float32)
        out = jax.eval_shape(lambda f: conn.init_with_output(jax.random.PRNGKey(0), f, train=False)[0], f)
        assert out.shape == t_shape, (student, teacher)


@pytest.mark.parametrize("src, dst", [((8, 8), (4, 4)), ((4, 4), (8, 8)), ((6, 6), (4, 4)), ((4, 4), (4, 4))])
def test_connector_resizes_by_pooling_or_interpolation(src, dst):
    conn = sm.Connector(out_channels=3, out_size=dst)
    f = jax.random.normal(jax.random.PRNGKey(0), (2, *src, 5))
    out, variables = conn.init_with_output(jax.random.PRNGKey(1), f, train=False)
    assert out.shape == (2, *dst, 3) and bool(jnp.all(out >= 0))
