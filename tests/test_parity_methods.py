"""Parity of every method's losses with a PyTorch formulation (issue 5, item 4).

For each method the JAX functions of `sa_mdrad_jax.methods` — the inner loss, its input gradient
(what PGD follows), the outer loss and its parameter gradient — are compared with the same
quantities written here in PyTorch from methods.md §1-3, on the same weights and inputs, in
float32, to 1e-5 relative. The PyTorch side is our own code: it uses PyTorch's own `F.kl_div`,
`F.cross_entropy` and autograd, so a reduction, a temperature, a stop-gradient or a teacher view
that differs from the spec shows up as a mismatch. The methods' official PyTorch code is run
against the same JAX functions separately (`experiments/parity_official_methods.py`,
docs/parity.md).

Models: 2-layer tanh MLPs on flattened 8x8x3 inputs (student; teachers of different widths),
written once as pure functions of a parameter dict and used by both frameworks (weights copied
JAX -> torch). Logit scales are chosen so every KL is well away from zero (no float32
cancellation decides the comparison).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

torch = pytest.importorskip("torch", reason="needs the optional torch extra (pip install .[torch])")
F = torch.nn.functional

from sa_mdrad_jax.config import method_config  # noqa: E402
from sa_mdrad_jax.methods import make_method  # noqa: E402
from sa_mdrad_jax.methods.base import AttackContext, Outputs, StepContext  # noqa: E402

pytestmark = pytest.mark.torch

B, C, D = 6, 10, 8 * 8 * 3
EPS = 8 / 255
RTOL = 1e-5


# --- fixtures: one set of weights and inputs, in both frameworks --------------------------------
def _mlp_params(rng, hidden, scale, in_scale=3.0):
    """Pre-activations centred for x ∈ [0, 1]^D with std ≈ in_scale/√12; logits ≈ ±scale."""
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    w1 = rng.normal(size=(D, hidden)) * (in_scale / np.sqrt(D))
    return {"w1": f32(w1), "b1": f32(-0.5 * w1.sum(0) + 0.1 * rng.normal(size=(hidden,))),
            "w2": f32(rng.normal(size=(hidden, C)) * (scale / np.sqrt(hidden))),
            "b2": f32(0.1 * rng.normal(size=(C,)))}


def mlp(p, x):
    """Logits of a 2-layer tanh MLP; the same expression runs on jnp and torch arrays."""
    tanh = jnp.tanh if isinstance(x, jax.Array) else torch.tanh
    return tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


def hidden(p, x):
    tanh = jnp.tanh if isinstance(x, jax.Array) else torch.tanh
    return tanh(x @ p["w1"] + p["b1"])


def to_torch(tree, grad=False):
    return jax.tree.map(lambda a: torch.tensor(np.asarray(a), dtype=torch.float32, requires_grad=grad), tree)


def assert_close(ours, ref, rtol=RTOL):
    """Relative agreement: elementwise rtol, and an absolute floor of rtol x the largest |ref|."""
    ours = np.asarray(ours, np.float64)
    ref = np.asarray(ref.detach().numpy() if isinstance(ref, torch.Tensor) else ref, np.float64)
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=rtol * np.max(np.abs(ref)))


def assert_grads_close(ours: dict, ref: dict):
    for name in ours:
        assert_close(ours[name], ref[name].grad, RTOL)


def make_setup():
    """Student, three teachers, x, x' and y (numpy RNG, deterministic)."""
    rng = np.random.default_rng(0)   # numpy, not jax.random: nothing to compile
    student = _mlp_params(rng, 16, 8.0, in_scale=6.0)
    teachers = [_mlp_params(rng, 24, 10.0), _mlp_params(rng, 20, 12.0), _mlp_params(rng, 12, 16.0)]
    x = jnp.asarray(rng.uniform(size=(B, D)), jnp.float32)
    y_rand = jnp.asarray(rng.integers(0, C, size=B), jnp.int32)
    # x' one FGSM step from x on the student's CE: a perturbation that moves the student's output
    # (random ±ε would leave σS(x) ≈ σS(x') and the TRADES KL near float32 rounding).
    ce = lambda z: jnp.sum(optax.softmax_cross_entropy_with_integer_labels(mlp(student, z), y_rand))
    x_adv = jnp.clip(x + EPS * jnp.sign(jax.jit(jax.grad(ce))(x)), 0.0, 1.0)
    # Half the labels agree with teacher 0 on x' (so rectification both swaps and keeps).
    y = jnp.where(jnp.arange(B) % 2 == 0, jnp.argmax(mlp(teachers[0], x_adv), -1), y_rand)
    return dict(student=student, teachers=teachers, x=x, x_adv=x_adv, y=y)


@pytest.fixture(scope="module")
def setup():
    return make_setup()


def jax_teachers(setup, which=(0,)):
    return lambda z: jnp.stack([mlp(setup["teachers"][k], z) for k in which])


def inner_value_and_grad(method, setup, z, teachers=(0,), step=StepContext()):
    """Σ_i inner_loss_i and its gradient w.r.t. z, as the PGD of the distill step forms it:
    the student at z, no-gradient clean references s_nat / t_nat computed once."""
    p, x, y = setup["student"], setup["x"], setup["y"]
    t_at = jax_teachers(setup, teachers)
    s_nat = jax.lax.stop_gradient(mlp(p, x)) if "s_nat" in method.inner_refs else None
    t_nat = jax.lax.stop_gradient(t_at(x)) if "t_nat" in method.inner_refs else None

    def total(z):
        ctx = AttackContext(z=z, s=mlp(p, z), x=x, y=y, teachers=t_at, s_nat=s_nat, t_nat=t_nat, step=step)
        return jnp.sum(method.inner_loss(ctx))

    return jax.jit(jax.value_and_grad(total))(z)


def torch_inner_value_and_grad(setup, z, loss_of):
    """loss_of(z_torch) -> summed inner loss; returns (value, dL/dz) with PyTorch autograd."""
    zt = torch.tensor(np.asarray(z), requires_grad=True)
    value = loss_of(zt)
    (g,) = torch.autograd.grad(value, [zt])
    return value, g


def outer_value_and_grad(method, setup, build_outputs):
    """(loss, terms), d loss / d student params for `build_outputs(params) -> Outputs`."""
    def f(p):
        return method.outer_loss(build_outputs(p))
    (loss, terms), g = jax.jit(jax.value_and_grad(f, has_aux=True))(setup["student"])
    return loss, terms, g


def torch_views(setup):
    s = to_torch(setup["student"], grad=True)
    ts = [to_torch(t) for t in setup["teachers"]]
    x, x_adv = to_torch(setup["x"]), to_torch(setup["x_adv"])
    y = torch.tensor(np.asarray(setup["y"]), dtype=torch.long)
    return s, ts, x, x_adv, y


def kl_sum(p, student_logits, tau=1.0):
    """Σ_i KL(p_i ‖ σ_τ(s)_i) with PyTorch's own kl_div."""
    return F.kl_div(F.log_softmax(student_logits / tau, dim=1), p, reduction="sum")


def kl_bm(p, student_logits, tau=1.0):
    return F.kl_div(F.log_softmax(student_logits / tau, dim=1), p, reduction="batchmean")


def sm(logits, tau=1.0):
    return F.softmax(logits / tau, dim=1)


# --- TRADES -------------------------------------------------------------------------------------
def test_trades_inner_and_outer_match_pytorch(setup):
    method = make_method(method_config("trades"))
    s, _, x, x_adv, y = torch_views(setup)

    value, grad = inner_value_and_grad(method, setup, setup["x_adv"])
    ref_value, ref_grad = torch_inner_value_and_grad(
        setup, setup["x_adv"], lambda z: kl_sum(sm(mlp(s, x)).detach(), mlp(s, z)))
    assert_close(value, ref_value)
    assert_close(grad, ref_grad)

    loss, _, g = outer_value_and_grad(method, setup, lambda p: Outputs(
        y=setup["y"], s_adv=mlp(p, setup["x_adv"]), s_nat=mlp(p, setup["x"])))
    # TRADES: CE(S(x), y) + 6·KL_bm(σS(x) ‖ σS(x')), the gradient through BOTH branches.
    ref = F.cross_entropy(mlp(s, x), y) + 6.0 * kl_bm(sm(mlp(s, x)), mlp(s, x_adv))
    ref.backward()
    assert_close(loss, ref)
    assert_grads_close(g, s)


# --- ARD / IAD-I -------------------------------------------------------------------------------
def test_ard_inner_and_outer_match_pytorch(setup):
    config = method_config("ard")
    config.alpha = 0.7          # exercise the (1 − α) CE(S(x)) term too (the paper's α is 1)
    method = make_method(config)
    s, ts, x, x_adv, y = torch_views(setup)

    value, grad = inner_value_and_grad(method, setup, setup["x_adv"])
    ref_value, ref_grad = torch_inner_value_and_grad(
        setup, setup["x_adv"], lambda z: F.cross_entropy(mlp(s, z), y, reduction="sum"))
    assert_close(value, ref_value)
    assert_close(grad, ref_grad)

    t_nat = jax_teachers(setup)(setup["x"])
    loss, _, g = outer_value_and_grad(method, setup, lambda p: Outputs(
        y=setup["y"], s_adv=mlp(p, setup["x_adv"]), s_nat=mlp(p, setup["x"]), t_nat=t_nat))
    tau, a, k = config.tau, config.alpha, config.kl_scale
    ref = (a * tau**2 * k * kl_bm(sm(mlp(ts[0], x), tau), mlp(s, x_adv), tau)
           + (1 - a) * F.cross_entropy(mlp(s, x), y))
    ref.backward()
    assert_close(loss, ref)
    assert_grads_close(g, s)


@pytest.fixture(scope="module")
def iad(setup):
    """IAD-I's outer (loss, terms, gradient) at the 0-based epochs 59 and 60, one compile."""
    config = method_config("iad")
    method = make_method(config)
    t = jax_teachers(setup)
    t_nat, t_adv = t(setup["x"]), t(setup["x_adv"])

    @jax.jit
    def outer(p, epoch):
        def f(p):
            return method.outer_loss(Outputs(y=setup["y"], s_adv=mlp(p, setup["x_adv"]), s_nat=mlp(p, setup["x"]),
                                             t_nat=t_nat, t_adv=t_adv, step=StepContext.make(epoch=epoch)))
        return jax.value_and_grad(f, has_aux=True)(p)

    return config, {e: outer(setup["student"], e) for e in (59, 60)}


def _torch_iad(config, setup, epoch, detach_clean):
    """ARD term + [epoch ≥ 60] (1/B) Σ_i (1 − p_T(x')_{i,y_i}^β) KL(σS(x)_i ‖ σS(x')_i), p_T with no
    gradient; returns (loss, student params) after backward."""
    s, ts, x, x_adv, y = torch_views(setup)
    tau, k = config.tau, config.kl_scale
    loss = tau**2 * k * kl_bm(sm(mlp(ts[0], x), tau), mlp(s, x_adv), tau)
    if epoch >= config.start_epoch:
        trust = sm(mlp(ts[0], x_adv)).gather(1, y[:, None])[:, 0].detach() ** config.beta
        target = sm(mlp(s, x))
        target = target.detach() if detach_clean else target
        per = F.kl_div(F.log_softmax(mlp(s, x_adv), dim=1), target, reduction="none").sum(1)
        loss = loss + torch.mean((1 - trust) * per)
    loss.backward()
    return loss, s


@pytest.mark.parametrize("epoch", [59, 60])
def test_iad_outer_value_matches_pytorch(setup, iad, epoch):
    """The ARD term always, the introspection term from the 0-based epoch 60 on (IAD-I.py runs
    `for epoch in range(args.epochs)` and gates on `epoch >= args.begin`, begin = 60)."""
    config, results = iad
    (loss, terms), _ = results[epoch]
    ref, _ = _torch_iad(config, setup, epoch, detach_clean=True)
    assert_close(loss, ref)
    assert (float(terms["introspection"]) > 0) == (epoch >= config.start_epoch)


def test_iad_outer_gradient_matches_official_convention(setup, iad):
    """The introspection target σS(x) is not detached (ZFancy/IAD IAD-I.py l. 179): the gradient
    flows through the clean branch too, and detaching it would give another gradient."""
    config, results = iad
    _, g = results[60]
    _, s = _torch_iad(config, setup, 60, detach_clean=False)
    assert_grads_close(g, s)


# --- RSLAD ----------------------------------------------------------------------------------------
def test_rslad_inner_and_outer_match_pytorch(setup):
    config = method_config("rslad")
    method = make_method(config)
    s, ts, x, x_adv, y = torch_views(setup)

    value, grad = inner_value_and_grad(method, setup, setup["x_adv"])
    # The robust soft label is the teacher's CLEAN output, for the attack and both outer terms.
    ref_value, ref_grad = torch_inner_value_and_grad(
        setup, setup["x_adv"], lambda z: kl_sum(sm(mlp(ts[0], x)), mlp(s, z)))
    assert_close(value, ref_value)
    assert_close(grad, ref_grad)

    t_nat = jax_teachers(setup)(setup["x"])
    loss, _, g = outer_value_and_grad(method, setup, lambda p: Outputs(
        y=setup["y"], s_adv=mlp(p, setup["x_adv"]), s_nat=mlp(p, setup["x"]), t_nat=t_nat))
    p_t = sm(mlp(ts[0], x))
    ref = 0.1 * (5 / 6 * kl_bm(p_t, mlp(s, x_adv)) + 1 / 6 * kl_bm(p_t, mlp(s, x)))
    ref.backward()
    assert_close(loss, ref)
    assert_grads_close(g, s)


# --- MTARD ----------------------------------------------------------------------------------------
def test_mtard_inner_outer_and_balance_match_pytorch(setup):
    """Three steps of the normalised loss balance (first step records L_0; the third after one
    LR decay, η × 0.1), the outer loss and its gradient at each step."""
    config = method_config("mtard")
    method = make_method(config, teacher_names=("robust", "natural"))
    s, ts, x, x_adv, y = torch_views(setup)
    rob, nat = 0, 1

    value, grad = inner_value_and_grad(method, setup, setup["x_adv"])
    ref_value, ref_grad = torch_inner_value_and_grad(
        setup, setup["x_adv"], lambda z: F.cross_entropy(mlp(s, z), y, reduction="sum"))
    assert_close(value, ref_value)
    assert_close(grad, ref_grad)

    @jax.jit
    def step_fn(p, state, xs, xas, ctx):
        t_adv, t_nat = jax_teachers(setup, (rob,))(xas), jax_teachers(setup, (nat,))(xs)
        build = lambda p, state: Outputs(y=setup["y"], s_adv=mlp(p, xas), s_nat=mlp(p, xs), t_adv=t_adv,
                                         t_nat=t_nat, step=ctx, state=state)
        state = method.update_state(state, method.state_inputs(build(p, state)), ctx)
        (loss, _), g = jax.value_and_grad(lambda p: method.outer_loss(build(p, state)), has_aux=True)(p)
        return state, loss, g

    state = method.init_state()
    w_nat, l0 = 0.5, None
    eta0, k = config.balance_lr, config.kl_scale
    for step, decays in enumerate([0, 0, 1]):
        # Each step sees a different batch: shift the inputs (clipped back into [0, 1]).
        shift = 0.05 * step
        xs, xas = jnp.clip(setup["x"] + shift, 0, 1), jnp.clip(setup["x_adv"] - shift, 0, 1)
        state, loss, g = step_fn(setup["student"], state, xs, xas, StepContext.make(epoch=step, lr_decays=decays))

        s.update({n: v.detach().requires_grad_() for n, v in s.items()})
        xt, xat = to_torch(xs), to_torch(xas)
        l_adv = k * kl_bm(sm(mlp(ts[rob], xat)), mlp(s, xat))
        l_nat = k * kl_bm(sm(mlp(ts[nat], xt)), mlp(s, xt))
        l0 = l0 or (l_adv.item(), l_nat.item())
        r_adv, r_nat = l_adv.item() / l0[0], l_nat.item() / l0[1]
        w_nat = w_nat - eta0 * 0.1**decays * (w_nat - r_nat / (r_adv + r_nat))
        ref = (1 - w_nat) * l_adv + w_nat * l_nat
        ref.backward()
        assert_close(state["w_nat"], w_nat)
        assert_close(loss, ref)
        assert_grads_close(g, s)
    assert w_nat != 0.5   # the balance did move


# --- AdaAD (+ IGDM) -------------------------------------------------------------------------------
def test_adaad_inner_gradient_through_teacher_matches_pytorch(setup):
    config = method_config("adaad")
    method = make_method(config)
    s, ts, x, x_adv, y = torch_views(setup)
    value, grad = inner_value_and_grad(method, setup, setup["x_adv"])
    # KL(σT(z) ‖ σS(z)) differentiated w.r.t. z through the teacher too (AT_helper.adaad_inner_loss).
    ref_value, ref_grad = torch_inner_value_and_grad(
        setup, setup["x_adv"], lambda z: kl_sum(sm(mlp(ts[0], z)), mlp(s, z)))
    assert_close(value, ref_value)
    assert_close(grad, ref_grad)
    # ... and that is not the gradient through the student alone.
    _, student_only = torch_inner_value_and_grad(
        setup, setup["x_adv"], lambda z: kl_sum(sm(mlp(ts[0], z)).detach(), mlp(s, z)))
    assert np.max(np.abs(np.asarray(grad) - student_only.numpy())) > 1e-3 * np.max(np.abs(student_only.numpy()))


def _adaad_outputs(method, setup, epoch):
    t = jax_teachers(setup)
    views = {"nat": setup["x"], "adv": setup["x_adv"], **(method.inputs(setup["x"], setup["x_adv"])
                                                          if method.inputs else {})}
    t_views = {v: t(views[v]) for v in views}
    return lambda p: Outputs(y=setup["y"], s_adv=mlp(p, views["adv"]), s_nat=mlp(p, views["nat"]),
                             t_adv=t_views["adv"], t_nat=t_views["nat"], s={v: mlp(p, z) for v, z in views.items()},
                             t=t_views, step=StepContext.make(epoch=epoch))


def _torch_adaad_outer(s, ts, x, x_adv, alpha, kl_scale):
    return kl_scale * (alpha * kl_bm(sm(mlp(ts[0], x_adv)), mlp(s, x_adv))
                       + (1 - alpha) * kl_bm(sm(mlp(ts[0], x)), mlp(s, x)))


def test_adaad_outer_matches_pytorch(setup):
    config = method_config("adaad")
    config.alpha = 0.75         # exercise the clean term too (the paper's α is 1)
    method = make_method(config)
    s, ts, x, x_adv, y = torch_views(setup)
    loss, _, g = outer_value_and_grad(method, setup, _adaad_outputs(method, setup, 0))
    ref = _torch_adaad_outer(s, ts, x, x_adv, config.alpha, config.kl_scale)
    ref.backward()
    assert_close(loss, ref)
    assert_grads_close(g, s)


def test_adaad_plus_igdm_outer_matches_pytorch(setup):
    """AdaAD + α_IGDM·(e/E_ref)·KL_bm(σ(T(x+βδ) − T(x−γδ)) ‖ σ(S(x+βδ) − S(x−γδ))), x − γδ not
    clipped, e the 1-based epoch (the reference loops `for epoch in range(1, epochs + 1)`)."""
    config = method_config("adaad")
    config.igdm.enabled = True
    config.igdm.beta, config.igdm.gamma = 1.0, 0.5    # distinguish β from γ
    method = make_method(config)
    epoch = 49                                        # 0-based: the reference's epoch 50
    s, ts, x, x_adv, y = torch_views(setup)
    delta = (x_adv - x).detach()
    x_pos, x_neg = x + config.igdm.beta * delta, x - config.igdm.gamma * delta
    assert float(x_neg.min()) < 0 or float(x_neg.max()) > 1 or float(x_pos.max()) > 1  # unclipped matters
    loss, terms, g = outer_value_and_grad(method, setup, _adaad_outputs(method, setup, epoch))
    igdm = kl_bm(sm(mlp(ts[0], x_pos) - mlp(ts[0], x_neg)), mlp(s, x_pos) - mlp(s, x_neg))
    ref = (_torch_adaad_outer(s, ts, x, x_adv, config.alpha, config.kl_scale)
           + config.igdm.alpha * (epoch + 1) / config.igdm.e_ref * igdm)
    ref.backward()
    assert_close(terms["igdm_kl"], igdm)
    assert_close(loss, ref)
    assert_grads_close(g, s)


# --- SA-MDRAD ---------------------------------------------------------------------------------------
def _torch_rect_swap(t, y):
    pred = t.argmax(-1)
    z_pred, z_true = t.gather(-1, pred[..., None]), t.gather(-1, y.expand_as(pred)[..., None])
    swapped = t.scatter(-1, pred[..., None], z_true).scatter(-1, y.expand_as(pred)[..., None], z_pred)
    return torch.where((pred != y)[..., None], swapped, t)


def _torch_fused_target(t, y, tau):
    """CAW from raw logits, then Rect, then p̄ = Σ_k w_k σ_τ(Rect(t_k)) (methods.md §2 (3)-(5))."""
    ce = torch.stack([F.cross_entropy(tk, y, reduction="none") for tk in t])           # [K,B]
    w = (1 - F.softmax(ce, dim=0)) / (t.shape[0] - 1)
    return torch.einsum("kb,kbc->bc", w, F.softmax(_torch_rect_swap(t, y) / tau, dim=-1)), w


def test_sa_mdrad_outer_matches_pytorch(setup):
    """Logit and feature terms with three heterogeneous teachers; the student's 'connectors' are
    per-teacher linear maps of its hidden layer (part of its parameters here), so the feature
    gradient is checked too."""
    config = method_config("sa_mdrad")
    config.gamma = 0.3          # a value other than the default (1), to tell the CE(s_adv) weight apart
    method = make_method(config)
    tau, k = config.tau, config.kl_scale
    widths = [24, 20, 12]       # teacher hidden widths = their "feature maps" [B, 1, 1, width]
    rng = np.random.default_rng(1)
    conn = {f"r{i}": jnp.asarray(0.3 * rng.normal(size=(16, w)), jnp.float32) for i, w in enumerate(widths)}
    params = {**setup["student"], **conn}
    t_at = jax_teachers(setup, (0, 1, 2))
    x, x_adv, y = setup["x"], setup["x_adv"], setup["y"]
    feats = tuple(hidden(setup["teachers"][i], x)[:, None, None, :] for i in range(3))

    def build(p):
        mapped = lambda z: ((tuple((hidden(p, z) @ p[f"r{i}"])[:, None, None, :] for i in range(3))),)
        return Outputs(y=y, s_adv=mlp(p, x_adv), s_nat=mlp(p, x), t_adv=t_at(x_adv), t_nat=t_at(x),
                       f_teachers=(feats,), mapped_adv=mapped(x_adv), mapped_nat=mapped(x),
                       feature_weight=jnp.float32(1.0))

    (loss, terms), g = jax.jit(jax.value_and_grad(lambda p: method.outer_loss(build(p)), has_aux=True))(params)

    sp = to_torch(params, grad=True)
    ts = [to_torch(t) for t in setup["teachers"]]
    xt, xat = to_torch(x), to_torch(x_adv)
    yt = torch.tensor(np.asarray(y), dtype=torch.long)
    t_adv = torch.stack([mlp(t, xat) for t in ts])
    t_nat = torch.stack([mlp(t, xt) for t in ts])
    p_adv, w_adv = _torch_fused_target(t_adv, yt, tau)
    p_nat, w_nat = _torch_fused_target(t_nat, yt, tau)
    kl_adv = k * tau**2 * kl_bm(p_adv, mlp(sp, xat), tau)
    kl_nat = k * tau**2 * kl_bm(p_nat, mlp(sp, xt), tau)

    def feat(z):   # mean_i Σ_k w^nat_{k,i} mean_c (r_k(F_S)_i − F_k,i)²
        d = torch.stack([((hidden(sp, z) @ sp[f"r{i}"] - hidden(ts[i], xt)) ** 2).mean(1) for i in range(3)])
        return (w_nat * d).sum(0).mean()

    ref = (config.lambda_adv * (kl_adv + config.beta * feat(xat)) + config.lambda_nat * (kl_nat + config.beta * feat(xt))
           + config.gamma * F.cross_entropy(mlp(sp, xat), yt))
    ref.backward()
    assert_close(terms["w_adv"], w_adv)
    assert_close(terms["kl_adv"], kl_adv)
    assert_close(terms["feat_nat"], feat(xt))
    assert_close(loss, ref)
    assert_grads_close(g, sp)
    # The fixture has wrong teachers on x' (so the swap is exercised) and right ones.
    wrong = t_adv.argmax(-1) != yt
    assert bool(wrong.any()) and not bool(wrong.all())
