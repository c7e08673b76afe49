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

from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from sa_mdrad_jax.attacks.pgd import pgd_with_carry
from sa_mdrad_jax.data import augment as augment_lib
from sa_mdrad_jax.methods.base import AttackContext, Method, Outputs, StepContext
from sa_mdrad_jax.methods.sa_mdrad import Connector
from sa_mdrad_jax.train.input import DATA_AXIS as DATA
from sa_mdrad_jax.train.state import TrainState


# --- connectors: one per (teacher, distilled stage) ---------------------------------------------
class ConnectorSpec(NamedTuple):
    key: str          # 't{k}' for the final stage, 't{k}_{stage}' otherwise (variables live under it)
    teacher: int
    stage: str
    module: Connector


def connector_key(teacher: int, stage: str) -> str:
    return f"t{teacher}" if stage == "final" else f"t{teacher}_{stage}"


def feature_shapes(model: nn.Module, image_shape) -> dict:
    """{feature name: shape} of `model`'s feature maps for one image of `image_shape`."""
    x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    out = jax.eval_shape(lambda x: model.init_with_output(jax.random.PRNGKey(0), x, train=False)[0], x)
    return {k: tuple(v.shape) for k, v in out[1].items()}


def make_connectors(student_shapes, teacher_shapes, axis_name: str | None = DATA,
                    stages: Sequence[str] = ("final",)) -> tuple[ConnectorSpec, ...]:
    """Connectors r_{k,s}: student stage s -> teacher k's stage s shape.

    `teacher_shapes`: per teacher, a {stage: shape} dict (or just the final map's shape). A stage
    missing from a teacher (or the student) is an error naming the stages it has.
    """
    specs = []
    for stage in stages:
        if isinstance(student_shapes, dict) and stage not in student_shapes:
            raise ValueError(f"Feature stage {stage!r} is not a student stage. Valid: {', '.join(student_shapes)}.")
        for k, shapes in enumerate(teacher_shapes):
            if not isinstance(shapes, dict):
                shapes = {"final": tuple(shapes)}
            if stage not in shapes:
                raise ValueError(f"Feature stage {stage!r} is not a stage of teacher {k}. "
                                 f"Valid: {', '.join(shapes)}.")
            s = shapes[stage]
            specs.append(ConnectorSpec(connector_key(k, stage), k, stage,
                                       Connector(out_channels=s[-1], out_size=tuple(s[1:3]), axis_name=axis_name)))
    return tuple(specs)


def init_connectors(key, connectors: Sequence[ConnectorSpec], student_shapes) -> dict:
    """{'params': {key: ...}, 'batch_stats': {key: ...}} for every connector.

    `student_shapes`: the student's {stage: shape} (or the final map's shape)."""
    if not isinstance(student_shapes, dict):
        student_shapes = {"final": tuple(student_shapes)}
    params, stats = {}, {}
    for i, c in enumerate(connectors):
        f = jnp.zeros((1, *student_shapes[c.stage][1:]), jnp.float32)
        v = c.module.init(jax.random.fold_in(key, i), f, train=False)
        params[c.key], stats[c.key] = v["params"], v["batch_stats"]
    return {"params": params, "batch_stats": stats}


def epoch_context(config, epoch: int) -> StepContext:
    """The step context of `epoch` from a distillation config: feature warm-up and LR decays so far
    (piecewise schedules decay at the start of each boundary epoch)."""
    warm = config.method.get("feature_warmup_epochs", 0)
    decays = 0
    if config.optim.schedule == "piecewise":
        decays = sum(int(epoch >= b) for b in config.optim.boundaries)
    return StepContext.make(epoch=epoch, feature_weight=0.0 if epoch < warm else 1.0, lr_decays=decays)


def _entropy(w):  # [K,B] -> [B]
    return -jnp.sum(w * jnp.log(jnp.clip(w, 1e-12)), axis=0)


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
    """
    all_teachers = tuple(range(len(teachers)))
    view_teachers = dict(method.view_teachers or {})
    t_views = list(method.teacher_views)
    if "t_nat" in method.inner_refs and "nat" not in t_views:
        t_views.append("nat")
    feature_views = (method.feature_target,) if method.connectors else ()
    stages = tuple(method.feature_stages)

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

    def local(state, teacher_vars, images, labels, aug, noise, ctx):
        x = augment_lib.augment(images, aug, pad=pad) if augment else augment_lib.to_float(images)
        y = labels
        bs = state.batch_stats
        nograd = jax.lax.stop_gradient
        t, f_teachers = {}, None
        if "nat" in t_views or "nat" in feature_views:
            t_nat, f = teach(teacher_vars, x, view_teachers.get("nat", all_teachers), "nat" in feature_views)
            t["nat"] = nograd(t_nat)
            f_teachers = nograd(f) if "nat" in feature_views else None

        if method.inner_loss is not None:
            if method.attack_bn == "train" and not sync_bn:   # local statistics vary per device
                bs = jax.lax.pcast(bs, DATA, to="varying")
            start = {"uniform": x + eps * noise, "normal": x + 0.001 * noise, "none": x}[method.attack_init]
            x_adv, bs = adversarial_examples(
                method, attack_student(model, nograd(state.params), method.attack_bn), x, y, start, bs,
                teachers_at=lambda z: teach(teacher_vars, z)[0],   # with gradient w.r.t. z (AdaAD)
                t_nat=t.get("nat"), ctx=ctx, eps=eps, step_size=step_size, steps=steps)
        else:
            x_adv = x
        inputs = {"nat": x, "adv": x_adv}
        if method.inputs is not None:
            inputs.update(method.inputs(x, x_adv))
        for view in t_views:
            if view not in t:
                t[view] = nograd(teach(teacher_vars, inputs[view], view_teachers.get(view, all_teachers))[0])
        if "adv" in feature_views:
            f_teachers = nograd(teach(teacher_vars, x_adv, features=True)[1])
        m_state = state.extra.get("method")

        def loss_fn(trainable, bs):
            params, conn = trainable
            logits, mapped, conn_bs = {}, {}, conn.get("batch_stats", {})
            for view in method.student_views:
                (lg, ft), upd = model.apply({"params": params, "batch_stats": bs}, inputs[view], train=True,
                                            mutable=["batch_stats"])
                bs, logits[view] = upd["batch_stats"], lg
                if method.connectors and view in ("adv", "nat"):
                    per_stage = []
                    for s in stages:
                        outs = []
                        for c in connectors:
                            if c.stage != s:
                                continue
                            out, u = c.module.apply({"params": conn["params"][c.key], "batch_stats": conn_bs[c.key]},
                                                    ft[s].astype(jnp.float32), train=True, mutable=["batch_stats"])
                            conn_bs = {**conn_bs, c.key: u["batch_stats"]}
                            outs.append(out)
                        per_stage.append(tuple(outs))
                    mapped[view] = tuple(per_stage)
            out = Outputs(y=y, s_adv=logits.get("adv"), s_nat=logits.get("nat"), t_adv=t.get("adv"),
                          t_nat=t.get("nat"), f_teachers=f_teachers, mapped_adv=mapped.get("adv"),
                          mapped_nat=mapped.get("nat"), feature_weight=ctx.feature_weight, s=logits, t=t,
                          step=ctx, state=m_state)
            new_state = m_state
            if method.update_state is not None:
                # The state update reads global-batch means (so N devices == 1) and has no gradient.
                seen = jax.lax.pmean(nograd(method.state_inputs(out)), DATA)
                new_state = method.update_state(m_state, seen, ctx)
                out = out._replace(state=new_state)
            loss, terms = method.outer_loss(out)
            return loss, (logits, bs, conn_bs, terms, new_state)

        conn_vars = state.extra.get("connectors", {"params": {}, "batch_stats": {}})
        # Gradients w.r.t. device-varying copies of the replicated parameters: this device's own
        # gradient, averaged explicitly below (see train/step.py).
        p_local = jax.lax.pcast(state.params, DATA, to="varying")
        c_local = jax.lax.pcast(conn_vars["params"], DATA, to="varying")
        loss_of = lambda p, cp: loss_fn((p, {"params": cp, "batch_stats": conn_vars["batch_stats"]}), bs)
        (loss, (logits, bs, conn_bs, terms, m_state)), (g_params, g_conn) = jax.value_and_grad(
            loss_of, argnums=(0, 1), has_aux=True)(p_local, c_local)
        g_params, g_conn = jax.lax.pmean((g_params, g_conn), DATA)
        if not sync_bn:
            bs, conn_bs = jax.lax.pmean((bs, conn_bs), DATA)
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
        if "w_adv" in terms:
            metrics["w_adv_sum"] = psum(jnp.sum(terms["w_adv"], axis=1))         # [K]
            metrics["w_adv_entropy_sum"] = psum(jnp.sum(_entropy(terms["w_adv"])))
        state = state.replace(step=state.step + 1, params=params, batch_stats=bs, opt_state=opt_state, extra=extra)
        return state, metrics

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
