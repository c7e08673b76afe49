"""SA-MDRAD: sample-adaptive multi-teacher dynamic rectification adversarial distillation.

Li et al., "SA-MDRAD", Multimedia Systems 30:225 (2024), as specified in methods.md §2: the logits
of K standard teachers are weighted per sample by their confidence (CA-MKD, Zhang et al. 2022),
rectified per sample (dynamic rectification KD, Amik et al. 2022), fused, and distilled into the
student on clean and adversarial inputs, together with a feature term through trainable
connectors. Everything here is a pure function of arrays; the option names are config fields.

Shapes: teacher logits `t` are [K, B, C] (teacher-major), labels `y` [B], weights `w` [K, B].
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from sa_mdrad_jax.losses import cross_entropy, kl_batchmean, kl_per_example  # noqa: F401  (re-exported)
from sa_mdrad_jax.methods.trades import trades_inner
from sa_mdrad_jax.train.connectors import Connector  # noqa: F401  (re-exported: r_k lives with the step's plumbing)

RECTIFY = ("swap", "none", "soft", "drop")
WEIGHTING = ("ca", "uniform", "softmax_neg_ce")


# --- rectification -----------------------------------------------------------------------------
def rect_swap(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Rect(z, y): where argmax z ≠ y, swap the entries at argmax z and at y; else unchanged.

    Works on any leading shape [..., C] with labels broadcastable to [...].
    """
    num_classes = logits.shape[-1]
    pred = jnp.argmax(logits, axis=-1)
    y = jnp.broadcast_to(y, pred.shape)
    z_pred = jnp.take_along_axis(logits, pred[..., None], axis=-1)
    z_true = jnp.take_along_axis(logits, y[..., None], axis=-1)
    classes = jnp.arange(num_classes)
    at_pred = classes == pred[..., None]
    at_true = classes == y[..., None]
    swapped = jnp.where(at_pred, z_true, jnp.where(at_true, z_pred, logits))
    return jnp.where((pred != y)[..., None], swapped, logits)


def is_wrong(logits: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.argmax(logits, axis=-1) != y


# --- weighting (from RAW logits, before rectification) -----------------------------------------
def per_teacher_ce(t: jax.Array, y: jax.Array) -> jax.Array:
    """[K, B] cross-entropy of each teacher on each sample."""
    return cross_entropy(t, jnp.broadcast_to(y, t.shape[:-1]))


def caw(t: jax.Array, y: jax.Array) -> jax.Array:
    """Confidence-aware weights (CA-MKD): w_k = (1 − softmax_k(ℓ)_k) / (K − 1), ℓ_k = CE(t_k, y).

    Σ_k w_k = 1 per sample; the teacher with the highest CE gets the least weight; K = 1 gives 1.
    """
    num_teachers = t.shape[0]
    if num_teachers == 1:
        return jnp.ones(t.shape[:2], t.dtype)
    ce = per_teacher_ce(t, y)
    return (1.0 - jax.nn.softmax(ce, axis=0)) / (num_teachers - 1)


def teacher_weights(t: jax.Array, y: jax.Array, rule: str = "ca", temperature: float = 1.0) -> jax.Array:
    """[K, B] per-sample teacher weights, no gradient: 'ca' | 'uniform' | 'softmax_neg_ce'."""
    t = jax.lax.stop_gradient(t)
    if rule == "ca":
        return caw(t, y)
    if rule == "uniform":
        return jnp.full(t.shape[:2], 1.0 / t.shape[0], t.dtype)
    if rule == "softmax_neg_ce":
        return jax.nn.softmax(-per_teacher_ce(t, y) / temperature, axis=0)
    raise ValueError(f"Unknown weighting {rule!r}. Valid: {', '.join(WEIGHTING)}.")


# --- targets: weight, rectify, fuse --------------------------------------------------------------
def rectified_probs(t: jax.Array, y: jax.Array, w: jax.Array, *, rule: str, tau: float,
                    rho: float = 0.5) -> tuple[jax.Array, jax.Array]:
    """Applies the rectification rule; returns (per-teacher probabilities σ_τ [K,B,C], weights [K,B]).

    'swap': σ_τ(Rect(t_k, y)).  'none': σ_τ(t_k).  'soft': for wrong samples
    (1 − ρ)·σ_τ(t_k) + ρ·onehot(y).  'drop': a wrong teacher's weight is set to 0 and the others
    renormalised; a sample on which every teacher is wrong falls back to 'swap' (so it keeps a target).
    """
    wrong = is_wrong(t, y)
    if rule == "swap":
        return jax.nn.softmax(rect_swap(t, y) / tau, axis=-1), w
    if rule == "none":
        return jax.nn.softmax(t / tau, axis=-1), w
    if rule == "soft":
        onehot = jax.nn.one_hot(jnp.broadcast_to(y, wrong.shape), t.shape[-1], dtype=t.dtype)
        p = jax.nn.softmax(t / tau, axis=-1)
        return jnp.where(wrong[..., None], (1.0 - rho) * p + rho * onehot, p), w
    if rule == "drop":
        kept = jnp.where(wrong, 0.0, w)
        total = kept.sum(axis=0, keepdims=True)
        all_wrong = total <= 0.0
        w_new = jnp.where(all_wrong, w, kept / jnp.where(all_wrong, 1.0, total))
        p_keep = jax.nn.softmax(t / tau, axis=-1)
        p_swap = jax.nn.softmax(rect_swap(t, y) / tau, axis=-1)
        return jnp.where(all_wrong[..., None], p_swap, p_keep), w_new
    raise ValueError(f"Unknown rectification {rule!r}. Valid: {', '.join(RECTIFY)}.")


def fuse(probs: jax.Array, w: jax.Array) -> jax.Array:
    """p̄ = Σ_k w_k σ_τ(t̃_k): [K,B,C], [K,B] -> [B,C]."""
    return jnp.einsum("kb,kbc->bc", w, probs)


def sample_adaptive_target(t: jax.Array, y: jax.Array, *, weighting: str = "ca", weight_temperature: float = 1.0,
                           rectify: str = "swap", tau: float = 4.0, rho: float = 0.5,
                           weight_logits: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """(fused target p̄ [B,C], weights [K,B]) — weights from RAW logits, then rectification.

    Weighting happens before rectification on purpose: after a swap a wrong teacher looks
    confident and must not gain weight for it. `weight_logits` (default `t`) lets the weights come
    from other inputs (teacher_input_adv='hybrid': target from x, weights from x').
    """
    t = jax.lax.stop_gradient(t)
    w = teacher_weights(t if weight_logits is None else weight_logits, y, weighting, weight_temperature)
    probs, w = rectified_probs(t, y, w, rule=rectify, tau=tau, rho=rho)
    return jax.lax.stop_gradient(fuse(probs, w)), jax.lax.stop_gradient(w)


# --- distances ---------------------------------------------------------------------------------
def distill_kl(p: jax.Array, student_logits: jax.Array, *, tau: float, kl_scale: float) -> jax.Array:
    """L_KL = kl_scale · τ² · KL_batchmean(p̄ ‖ σ_τ(s))."""
    return kl_scale * tau**2 * kl_batchmean(p, student_logits, tau)


def feature_distance(student: jax.Array, teacher: jax.Array, kind: str = "mse") -> jax.Array:
    """Per-sample mean over (h, w, c) of the squared difference, [B]; 'normalized_mse' first scales
    each sample's map to unit L2 norm (scale-free across heterogeneous teachers)."""
    teacher = jax.lax.stop_gradient(teacher)
    if kind == "normalized_mse":
        norm = lambda f: f / (jnp.linalg.norm(f.reshape(f.shape[0], -1), axis=-1)[:, None, None, None] + 1e-8)
        student, teacher = norm(student), norm(teacher)
    elif kind != "mse":
        raise ValueError(f"Unknown feature distance {kind!r}. Valid: mse, normalized_mse.")
    return jnp.mean(jnp.square(student - teacher), axis=(1, 2, 3))


def feature_loss(mapped: list[jax.Array], teacher_feats: list[jax.Array], w: jax.Array, kind: str = "mse") -> jax.Array:
    """L_F = mean_i Σ_k w_{k,i} · d(r_k(F_S)_i, F_{k,i})."""
    per_teacher = jnp.stack([feature_distance(m, f, kind) for m, f in zip(mapped, teacher_feats)])  # [K,B]
    return jnp.mean(jnp.sum(jax.lax.stop_gradient(w) * per_teacher, axis=0))


def _per_stage(features):
    """Feature lists are per stage, then per teacher; a flat per-teacher list is one stage."""
    if features and not isinstance(features[0], (list, tuple)):
        return [features]
    return list(features)


def staged_feature_loss(mapped, teacher_feats, w: jax.Array, kind: str = "mse") -> jax.Array:
    """The mean over distilled stages of L_F (one stage, 'final', by default)."""
    mapped, teacher_feats = _per_stage(mapped), _per_stage(teacher_feats)
    if len(mapped) != len(teacher_feats):
        raise ValueError(f"{len(mapped)} student stages but {len(teacher_feats)} teacher stages.")
    return sum(feature_loss(m, f, w, kind) for m, f in zip(mapped, teacher_feats)) / len(mapped)


# --- the outer loss ----------------------------------------------------------------------------
TEACHER_INPUTS = ("adv", "clean", "hybrid")


def outer_loss(*, s_adv: jax.Array, s_nat: jax.Array, t_adv: jax.Array, t_nat: jax.Array, y: jax.Array,
               mapped_adv: list[jax.Array] | None = None, mapped_nat: list[jax.Array] | None = None,
               teacher_feats: list[jax.Array] | None = None, teacher_input_adv: str = "adv",
               weighting: str = "ca", weight_temperature: float = 1.0, rectify: str = "swap",
               rho: float = 0.5, tau: float = 4.0, kl_scale: float = 0.1, lambda_adv: float = 5 / 6,
               lambda_nat: float = 1 / 6, beta: float = 1.0, gamma: float = 1.0,
               feature_distance_kind: str = "mse", feature_weight: jax.Array | float = 1.0):
    """L = λ_adv (L_KL^adv + β L_F^adv) + λ_nat (L_KL^nat + β L_F^nat) + γ CE(s^adv, y)   (methods.md §2).

    s_*: student logits [B,C]; t_*: teacher logits [K,B,C]; mapped_*: connector outputs r_k(F_S)
    per teacher (or per stage, then per teacher); teacher_feats: F_k (the feature target, from x by
    default) in the same layout; L_F is averaged over the stages. `feature_weight`
    (0 during the warm-up epoch, else 1) multiplies β. Returns (loss, terms) with the
    per-term magnitudes and the weights for the diagnostics.
    """
    if teacher_input_adv not in TEACHER_INPUTS:
        raise ValueError(f"Unknown teacher_input_adv {teacher_input_adv!r}. Valid: {', '.join(TEACHER_INPUTS)}.")
    opts = dict(weighting=weighting, weight_temperature=weight_temperature, rectify=rectify, tau=tau, rho=rho)
    target_nat, w_nat = sample_adaptive_target(t_nat, y, **opts)
    if teacher_input_adv == "adv":
        target_adv, w_adv = sample_adaptive_target(t_adv, y, **opts)
    elif teacher_input_adv == "clean":
        target_adv, w_adv = target_nat, w_nat
    else:  # hybrid: target from the clean view, weights from the adversarial one
        target_adv, w_adv = sample_adaptive_target(t_nat, y, weight_logits=t_adv, **opts)
    kl_adv = distill_kl(target_adv, s_adv, tau=tau, kl_scale=kl_scale)
    kl_nat = distill_kl(target_nat, s_nat, tau=tau, kl_scale=kl_scale)
    f_adv = f_nat = jnp.zeros((), s_adv.dtype)
    if teacher_feats:
        f_adv = staged_feature_loss(mapped_adv, teacher_feats, w_nat, feature_distance_kind)
        f_nat = staged_feature_loss(mapped_nat, teacher_feats, w_nat, feature_distance_kind)
    ce_adv = jnp.mean(cross_entropy(s_adv, y))
    b = beta * feature_weight
    loss = lambda_adv * (kl_adv + b * f_adv) + lambda_nat * (kl_nat + b * f_nat) + gamma * ce_adv
    terms = {"kl_adv": kl_adv, "kl_nat": kl_nat, "feat_adv": f_adv, "feat_nat": f_nat, "ce_adv": ce_adv,
             "w_adv": w_adv, "w_nat": w_nat}
    return loss, terms


# --- the attack (inner) losses -------------------------------------------------------------------
ATTACK_LOSSES = ("ce", "kl_fused_clean", "trades", "kl_fused_adv")
BRANCH_WEIGHTS = ("fixed", "mtard")


def attack_loss(kind: str, *, target_opts: dict, tau: float):
    """The PGD inner loss `ctx -> [B]` of SA-MDRAD's option `attack_loss` (methods.md §2 (1)):

    'ce':             CE(S(x'), y)
    'kl_fused_clean': Σ_c KL(p̄_nat ‖ σ_τ S(x')) — the fused rectified clean target (RSLAD-style)
    'trades':         Σ_c KL(σ S(x) ‖ σ S(x')) — S(x) a no-gradient reference (TRADES)
    'kl_fused_adv':   Σ_c KL(p̄(x') ‖ σ_τ S(x')) with p̄(x') the fused rectified target of the
                      teachers AT x', differentiated through the teachers too (AdaAD-style); the
                      weights have no gradient, as in the outer loss.
    `tau` is the temperature of target and student in the KL-based attacks.
    """
    if kind == "ce":
        return lambda c: cross_entropy(c.s, c.y), ()
    if kind == "kl_fused_clean":
        def inner(c):
            p, _ = sample_adaptive_target(c.t_nat, c.y, **{**target_opts, "tau": tau})
            return kl_per_example(p, c.s, tau)
        return inner, ("t_nat",)
    if kind == "trades":
        return trades_inner, ("s_nat",)
    if kind == "kl_fused_adv":
        def inner(c):
            t = c.teachers(c.z)                     # [K,B,C], gradient w.r.t. z
            w = teacher_weights(t, c.y, target_opts["weighting"], target_opts["weight_temperature"])
            probs, w = rectified_probs(t, c.y, w, rule=target_opts["rectify"], tau=tau, rho=target_opts["rho"])
            return kl_per_example(fuse(probs, jax.lax.stop_gradient(w)), c.s, tau)
        return inner, ()
    raise ValueError(f"Unknown SA-MDRAD attack_loss {kind!r}. Valid: {', '.join(ATTACK_LOSSES)}.")


# --- registration ------------------------------------------------------------------------------
def weight_diagnostics(terms: dict) -> dict:
    """Per-step sums of the adversarial branch's teacher weights w [K,B] (methods.md §2 logs): per
    teacher, and of their entropy."""
    w = terms["w_adv"]
    entropy = -jnp.sum(w * jnp.log(jnp.clip(w, 1e-12)), axis=0)          # [B]
    return {"w_adv_sum": jnp.sum(w, axis=1), "w_adv_entropy_sum": jnp.sum(entropy)}


DEFAULTS = dict(
    attack_loss="ce",          # 'ce' | 'kl_fused_clean' | 'trades' | 'kl_fused_adv'
    attack_tau=0.0,            # temperature of the KL attack losses; 0 = tau (target exactly p̄)
    attack_init="normal",      # 0.001·N(0, I) start, the RSLAD/MTARD recipe
    teacher_input_adv="adv",   # 'adv' | 'clean' | 'hybrid'
    weighting="ca",            # 'ca' | 'uniform' | 'softmax_neg_ce'
    weight_temperature=1.0,
    rectify="swap",            # 'swap' | 'none' | 'soft' | 'drop'
    rho=0.5,                   # 'soft' mixing weight
    tau=4.0, kl_scale=0.1, lambda_adv=5 / 6, lambda_nat=1 / 6,
    branch_weights="fixed",    # 'fixed' (lambda_adv/lambda_nat) | 'mtard' (normalised loss balance)
    balance_lr=0.025,          # MTARD balance η (×0.1 at each LR decay)
    beta=1.0,                  # feature term weight (0 = logits only)
    gamma=1.0,                 # CE(s_adv, y) weight: 1 chosen on validation over the first guess 0
                               # (docs/sa_mdrad_defaults.md; grid_presets.SWEEP_BASE keeps the first guess)
    feature_stages=("final",),  # distilled feature maps, one connector per (teacher, stage)
    feature_distance="mse",    # 'mse' | 'normalized_mse'
    feature_target="nat",      # teacher features from x ('nat') or x' ('adv')
    feature_warmup_epochs=1,
)


def _register():
    from sa_mdrad_jax.methods.base import Method, Outputs, check_choice, register
    from sa_mdrad_jax.methods.mtard import balance_method_hooks

    @register("sa_mdrad", defaults=DEFAULTS, teachers="natural", schedule_of="rslad", quickstart=True,
              fashion_grid=True)
    def make(config, teacher_names=None) -> Method:
        """SA-MDRAD from `config` (the `method` block; every option of methods.md §2)."""
        del teacher_names
        check_choice(config.attack_loss, ATTACK_LOSSES, "SA-MDRAD attack_loss")
        check_choice(config.branch_weights, BRANCH_WEIGHTS, "SA-MDRAD branch_weights")
        check_choice(config.teacher_input_adv, TEACHER_INPUTS, "SA-MDRAD teacher_input_adv")
        check_choice(config.weighting, WEIGHTING, "SA-MDRAD weighting")
        check_choice(config.rectify, RECTIFY, "SA-MDRAD rectify")
        check_choice(config.feature_target, ("nat", "adv"), "SA-MDRAD feature_target")
        check_choice(config.feature_distance, ("mse", "normalized_mse"), "SA-MDRAD feature_distance")
        stages = tuple(config.feature_stages)
        if not stages:
            raise ValueError("SA-MDRAD feature_stages is empty: name at least one stage (default 'final') "
                             "or set beta=0 for logits only.")
        opts = dict(teacher_input_adv=config.teacher_input_adv, weighting=config.weighting,
                    weight_temperature=config.weight_temperature, rectify=config.rectify, rho=config.rho,
                    tau=config.tau, kl_scale=config.kl_scale, lambda_adv=config.lambda_adv,
                    lambda_nat=config.lambda_nat, beta=config.beta, gamma=config.gamma,
                    feature_distance_kind=config.feature_distance)
        use_features = config.beta > 0
        target_opts = dict(weighting=config.weighting, weight_temperature=config.weight_temperature,
                           rectify=config.rectify, rho=config.rho)
        inner, refs = attack_loss(config.attack_loss, target_opts=target_opts,
                                  tau=config.attack_tau or config.tau)

        def terms_of(out: Outputs, **over):
            return outer_loss(s_adv=out.s_adv, s_nat=out.s_nat, t_adv=out.t_adv, t_nat=out.t_nat, y=out.y,
                              mapped_adv=out.mapped_adv, mapped_nat=out.mapped_nat,
                              teacher_feats=out.f_teachers if use_features else None,
                              feature_weight=out.feature_weight, **{**opts, **over})

        hooks = {}
        if config.branch_weights == "fixed":
            loss = terms_of
        else:  # MTARD's normalised balance of the adversarial and natural branch losses
            def branch_losses(out: Outputs):
                _, t = terms_of(out)
                b = config.beta * out.feature_weight
                return t["kl_adv"] + b * t["feat_adv"], t["kl_nat"] + b * t["feat_nat"]

            def loss(out: Outputs):
                w_nat = out.state["w_nat"]
                total, t = terms_of(out, lambda_adv=1.0 - w_nat, lambda_nat=w_nat)
                return total, {**t, "balance_w_nat": w_nat}

            init, state_inputs, update = balance_method_hooks(config.balance_lr, branch_losses)
            hooks = dict(init_state=init, state_inputs=state_inputs, update_state=update)

        views = ("nat",) if config.teacher_input_adv == "clean" else ("nat", "adv")
        return Method(name="sa_mdrad", outer_loss=loss, inner_loss=inner, inner_refs=refs,
                      inner_teachers=config.attack_loss == "kl_fused_adv",
                      attack_init=config.attack_init, attack_bn="eval", teacher_views=views,
                      student_views=("adv", "nat"), connectors=use_features,
                      feature_target=config.feature_target, feature_stages=stages,
                      diagnostics=weight_diagnostics, **hooks)


_register()
