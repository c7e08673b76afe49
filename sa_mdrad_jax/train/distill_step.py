"""The generic adversarial-training / distillation step, data-parallel over the 'data' mesh axis.

One `jax.shard_map` inside one `jax.jit`, per device:
  1. augment the uint8 batch (crop/flip parameters drawn for the global batch);
  2. no-gradient clean references the inner loss asks for (student / teachers on x), once;
  3. x' = PGD on the method's inner loss from a start drawn for the global batch (so 1 device and
     N devices compute the same thing), `lax.fori_loop` inside; the student's BN in the method's
     attack mode ('eval'; 'train' threads the running statistics through the loop, synchronised
     over the 'data' axis like every other BN forward; 'batch_stats_no_update');
  4. frozen teachers (eval mode, no gradient) once per view the method needs;
  5. the method state update (no gradient, from global-batch means), then the method's outer loss
     on student train-mode forwards (+ trainable connectors r_k);
  6. gradients averaged with `pmean`, SGD update of student and connectors, global-sum metrics.
Adding a method never touches this file.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from sa_mdrad_jax.attacks.pgd import pgd_with_carry
from sa_mdrad_jax.data import augment as augment_lib
from sa_mdrad_jax.methods.base import AttackContext, Method, Outputs, StepContext
from sa_mdrad_jax.train.connectors import (ConnectorSpec, apply_connectors, connector_key,  # noqa: F401
                                           feature_shapes, init_connectors, make_connectors)
from sa_mdrad_jax.train.input import DATA_AXIS as DATA
from sa_mdrad_jax.train.state import TrainState


def epoch_context(config, epoch: int) -> StepContext:
    """The step context of `epoch` from a distillation config: feature warm-up and LR decays so far
    (piecewise schedules decay at the start of each boundary epoch)."""
    warm = config.method.get("feature_warmup_epochs", 0)
    decays = 0
    if config.optim.schedule == "piecewise":
        decays = sum(int(epoch >= b) for b in config.optim.boundaries)
    return StepContext.make(epoch=epoch, feature_weight=0.0 if epoch < warm else 1.0, lr_decays=decays)


def attack_student(model, params, bn_mode: str):
    """(z, batch_stats) -> (logits, batch_stats): the student during the attack (methods.md §1).

    'eval': running statistics, nothing updated. 'train': batch statistics, and the running
    statistics updated by every forward (ARD/IAD). 'batch_stats_no_update': batch statistics,
    updates discarded. Parameters are frozen (the attack differentiates w.r.t. the input only).
    """
    def forward(z, bs):
        if bn_mode == "eval":
            return model.apply({"params": params, "batch_stats": bs}, z, train=False)[0], bs
        (logits, _), upd = model.apply({"params": params, "batch_stats": bs}, z, train=True, mutable=["batch_stats"])
        return logits, (upd["batch_stats"] if bn_mode == "train" else bs)
    return forward


def adversarial_examples(method: Method, student_at, x, y, start, batch_stats, *, teachers_at, t_nat=None,
                         ctx: StepContext = StepContext(), eps: float, step_size: float, steps: int):
    """x' = PGD on `method.inner_loss` from `start`; returns (x', batch_stats after the attack).

    The clean references the method asks for are computed once, before the loop: the student's
    clean logits (in the attack BN mode, so a 'train' attack also counts that forward, as the
    reference codes do) and the teachers' clean logits `t_nat` (given by the caller, who reuses them).
    """
    s_nat = None
    if "s_nat" in method.inner_refs:
        s_nat, batch_stats = student_at(x, batch_stats)
        s_nat = jax.lax.stop_gradient(s_nat)
    t_nat = t_nat if "t_nat" in method.inner_refs else None

    def inner(z, bs):
        s, bs = student_at(z, bs)
        return method.inner_loss(AttackContext(z=z, s=s, x=x, y=y, teachers=teachers_at, s_nat=s_nat,
                                               t_nat=t_nat, step=ctx)), bs

    return pgd_with_carry(inner, x, start, batch_stats, eps=eps, step_size=step_size, steps=steps)


def make_distill_step(method: Method, model: nn.Module, teachers: Sequence[nn.Module], tx: optax.GradientTransformation,
                      mesh, *, eps: float, step_size: float, steps: int, connectors: Sequence[ConnectorSpec] = (),
                      augment: bool = True, pad: int = 4, flip: bool = True, sync_bn: bool = True):
    """Returns `step(state, batch, key, teacher_vars=(), ctx=StepContext()) -> (state, metrics)`.

    `state.extra` holds the connectors' variables and optimiser state ('connectors',
    'connector_opt_state') and the method state ('method') when the method has them.
    `teacher_vars` is a tuple of each teacher's {'params', 'batch_stats'} (replicated, frozen).
    `ctx` is a `StepContext` (a bare number is taken as its feature_weight).

    The per-device step (`local`) is the algorithm of the module docstring, one named piece each:
    `augment_batch`, `clean_teacher_outputs`, `attack`, `views`, `teacher_outputs`,
    `student_forwards` (with the connectors), `method_loss` (method state, then outer loss),
    `update` and `step_metrics`.
    """
    all_teachers = tuple(range(len(teachers)))
    view_teachers = dict(method.view_teachers or {})
    t_views = list(method.teacher_views)
    if "t_nat" in method.inner_refs and "nat" not in t_views:
        t_views.append("nat")
    feature_views = (method.feature_target,) if method.connectors else ()
    stages = tuple(method.feature_stages)
    nograd = jax.lax.stop_gradient

    def teach(teacher_vars, z, which=all_teachers, features=False):
        """Teacher logits [K,B,C] (and per-stage feature maps) at z; frozen weights, eval mode."""
        logits, feats = [], {s: [] for s in stages}
        for k in which:
            lg, ft = teachers[k].apply(jax.lax.stop_gradient(teacher_vars[k]), z, train=False)
            logits.append(lg)
            if features:
                for s in stages:
                    feats[s].append(ft[s].astype(jnp.float32))
        return jnp.stack(logits), tuple(tuple(feats[s]) for s in stages)

    def augment_batch(images, aug):
        """1. The uint8 batch as floats in [0, 1], randomly cropped/flipped."""
        return augment_lib.augment(images, aug, pad=pad) if augment else augment_lib.to_float(images)

    def clean_teacher_outputs(teacher_vars, x):
        """2. Teachers on x (logits, and features if the method distils them from x), once."""
        t, f_teachers = {}, None
        if "nat" in t_views or "nat" in feature_views:
            t_nat, f = teach(teacher_vars, x, view_teachers.get("nat", all_teachers), "nat" in feature_views)
            t["nat"] = nograd(t_nat)
            f_teachers = nograd(f) if "nat" in feature_views else None
        return t, f_teachers

    def attack(state, teacher_vars, x, y, noise, t_nat, ctx, bs):
        """3. x' by PGD on the method's inner loss (x itself without an inner loss); BN statistics after it."""
        if method.inner_loss is None:
            return x, bs
        if method.attack_bn == "train" and not sync_bn:   # local statistics vary per device
            bs = jax.lax.pcast(bs, DATA, to="varying")
        start = {"uniform": x + eps * noise, "normal": x + 0.001 * noise, "none": x}[method.attack_init]
        return adversarial_examples(
            method, attack_student(model, nograd(state.params), method.attack_bn), x, y, start, bs,
            teachers_at=lambda z: teach(teacher_vars, z)[0],   # with gradient w.r.t. z (AdaAD)
            t_nat=t_nat, ctx=ctx, eps=eps, step_size=step_size, steps=steps)

    def views(x, x_adv):
        """The named inputs: 'nat' = x, 'adv' = x', and the method's own (IGDM's x ± δ)."""
        inputs = {"nat": x, "adv": x_adv}
        if method.inputs is not None:
            inputs.update(method.inputs(x, x_adv))
        return inputs

    def teacher_outputs(teacher_vars, inputs, t, f_teachers):
        """4. Teachers once per remaining view (and features from x' if the method distils those)."""
        for view in t_views:
            if view not in t:
                t[view] = nograd(teach(teacher_vars, inputs[view], view_teachers.get(view, all_teachers))[0])
        if "adv" in feature_views:
            f_teachers = nograd(teach(teacher_vars, inputs["adv"], features=True)[1])
        return t, f_teachers

    def student_forwards(params, conn, bs, inputs):
        """5a. Student train-mode forwards per view, in the method's order (the order of the BN
        statistics updates), and the connectors on x and x' features."""
        logits, mapped, conn_bs = {}, {}, conn.get("batch_stats", {})
        for view in method.student_views:
            (lg, ft), upd = model.apply({"params": params, "batch_stats": bs}, inputs[view], train=True,
                                        mutable=["batch_stats"])
            bs, logits[view] = upd["batch_stats"], lg
            if method.connectors and view in ("adv", "nat"):
                mapped[view], conn_bs = apply_connectors(connectors, conn["params"], conn_bs, ft, stages)
        return logits, mapped, bs, conn_bs

    def method_loss(logits, mapped, t, f_teachers, y, ctx, m_state):
        """5b. The method state update (global-batch means, no gradient: N devices == 1), then the
        outer loss on this step's state."""
        out = Outputs(y=y, s_adv=logits.get("adv"), s_nat=logits.get("nat"), t_adv=t.get("adv"),
                      t_nat=t.get("nat"), f_teachers=f_teachers, mapped_adv=mapped.get("adv"),
                      mapped_nat=mapped.get("nat"), feature_weight=ctx.feature_weight, s=logits, t=t,
                      step=ctx, state=m_state)
        new_state = m_state
        if method.update_state is not None:
            seen = jax.lax.pmean(nograd(method.state_inputs(out)), DATA)
            new_state = method.update_state(m_state, seen, ctx)
            out = out._replace(state=new_state)
        loss, terms = method.outer_loss(out)
        return loss, terms, new_state

    def update(state, g_params, g_conn, conn_vars, bs, conn_bs, m_state):
        """6. The SGD update of the student and the connectors; BN statistics and method state kept."""
        updates, opt_state = tx.update(g_params, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        extra = dict(state.extra)
        if method.connectors:
            c_updates, c_opt = tx.update(g_conn, state.extra["connector_opt_state"], conn_vars["params"])
            extra["connectors"] = {"params": optax.apply_updates(conn_vars["params"], c_updates),
                                   "batch_stats": conn_bs}
            extra["connector_opt_state"] = c_opt
        if method.update_state is not None:
            extra["method"] = m_state
        return state.replace(step=state.step + 1, params=params, batch_stats=bs, opt_state=opt_state, extra=extra)

    def step_metrics(loss, logits, terms, t, y):
        """Global sums: loss, accuracy (x' and x), the method's terms and diagnostics, the teachers'
        accuracy per view and the fraction of examples every teacher gets wrong."""
        n = jnp.asarray(y.shape[0], jnp.float32)
        psum = lambda v: jax.lax.psum(v, DATA)
        s_main = logits.get("adv", logits.get("nat"))
        metrics = {"loss_sum": psum(loss * n), "count": psum(n),
                   "correct": psum(jnp.sum(jnp.argmax(s_main, -1) == y).astype(jnp.float32))}
        if "nat" in logits and "adv" in logits:
            metrics["correct_nat"] = psum(jnp.sum(jnp.argmax(logits["nat"], -1) == y).astype(jnp.float32))
        for name, value in terms.items():
            if name.startswith("w_"):
                continue
            metrics[f"{name}_sum"] = psum(value * n)
        for view in ("nat", "adv"):
            if view in t:
                right = jnp.argmax(t[view], -1) == y                              # [K,B]
                metrics[f"teacher_correct_{view}"] = psum(jnp.sum(right, axis=1).astype(jnp.float32))
                metrics[f"all_wrong_{view}_sum"] = psum(jnp.sum(~jnp.any(right, axis=0)).astype(jnp.float32))
        if method.diagnostics is not None:
            metrics.update({name: psum(value) for name, value in method.diagnostics(terms).items()})
        return metrics

    def local(state, teacher_vars, images, labels, aug, noise, ctx):
        x, y = augment_batch(images, aug), labels
        t, f_teachers = clean_teacher_outputs(teacher_vars, x)
        x_adv, bs = attack(state, teacher_vars, x, y, noise, t.get("nat"), ctx, state.batch_stats)
        inputs = views(x, x_adv)
        t, f_teachers = teacher_outputs(teacher_vars, inputs, t, f_teachers)
        m_state = state.extra.get("method")

        def loss_of(params, conn_params):
            conn = {"params": conn_params, "batch_stats": conn_vars["batch_stats"]}
            logits, mapped, new_bs, conn_bs = student_forwards(params, conn, bs, inputs)
            loss, terms, new_state = method_loss(logits, mapped, t, f_teachers, y, ctx, m_state)
            return loss, (logits, new_bs, conn_bs, terms, new_state)

        conn_vars = state.extra.get("connectors", {"params": {}, "batch_stats": {}})
        # Gradients w.r.t. device-varying copies of the replicated parameters: this device's own
        # gradient, averaged explicitly below (see train/step.py).
        p_local = jax.lax.pcast(state.params, DATA, to="varying")
        c_local = jax.lax.pcast(conn_vars["params"], DATA, to="varying")
        (loss, (logits, bs, conn_bs, terms, m_state)), (g_params, g_conn) = jax.value_and_grad(
            loss_of, argnums=(0, 1), has_aux=True)(p_local, c_local)
        g_params, g_conn = jax.lax.pmean((g_params, g_conn), DATA)
        if not sync_bn:
            bs, conn_bs = jax.lax.pmean((bs, conn_bs), DATA)
        state = update(state, g_params, g_conn, conn_vars, bs, conn_bs, m_state)
        return state, step_metrics(loss, logits, terms, t, y)

    sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), P(DATA), P(DATA), P(DATA), P(DATA), P()),
                            out_specs=(P(), P()))

    def step(state: TrainState, batch: dict, key: jax.Array, teacher_vars=(), ctx=None):
        if not isinstance(ctx, StepContext):
            ctx = StepContext.make(feature_weight=1.0 if ctx is None else ctx)
        k_aug, k_init = jax.random.split(key)
        n = batch["label"].shape[0]
        aug = augment_lib.sample_augment_params(k_aug, n, pad=pad)
        if not flip:
            aug["flips"] = jnp.zeros_like(aug["flips"])
        shape = batch["image"].shape
        if method.attack_init == "normal":
            noise = jax.random.normal(k_init, shape, jnp.float32)
        else:
            noise = jax.random.uniform(k_init, shape, jnp.float32, -1.0, 1.0)
        ctx = StepContext(*(jnp.asarray(v) for v in ctx))
        return sharded(state, tuple(teacher_vars), batch["image"], batch["label"], aug, noise, ctx)

    return step
