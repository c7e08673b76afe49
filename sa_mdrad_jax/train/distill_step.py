"""The generic adversarial-training / distillation step, data-parallel over the 'data' mesh axis.

One `jax.shard_map` inside one `jax.jit`, per device:
  1. augment the uint8 batch (crop/flip parameters drawn for the global batch);
  2. x' = PGD on the method's inner loss from a start drawn for the global batch (so 1 device and
     N devices compute the same thing), student BN in eval mode, `lax.fori_loop` inside;
  3. frozen teachers (eval mode, no gradient) once per input the method needs;
  4. the method's outer loss on student train-mode forwards (+ trainable connectors r_k);
  5. gradients averaged with `pmean`, SGD update of student and connectors, global-sum metrics.
Adding a method never touches this file.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from sa_mdrad_jax.attacks.pgd import pgd_from
from sa_mdrad_jax.data import augment as augment_lib
from sa_mdrad_jax.methods.base import Method, Outputs
from sa_mdrad_jax.methods.sa_mdrad import Connector
from sa_mdrad_jax.train.input import DATA_AXIS as DATA
from sa_mdrad_jax.train.state import TrainState


def make_connectors(student_final_shape, teacher_final_shapes, axis_name: str | None = DATA) -> tuple[Connector, ...]:
    del student_final_shape
    return tuple(Connector(out_channels=s[-1], out_size=tuple(s[1:3]), axis_name=axis_name)
                 for s in teacher_final_shapes)


def init_connectors(key, connectors: Sequence[Connector], student_final_shape) -> dict:
    """{'params': {'t0': ...}, 'batch_stats': {'t0': ...}} for every teacher's connector."""
    f = jnp.zeros((1, *student_final_shape[1:]), jnp.float32)
    params, stats = {}, {}
    for k, conn in enumerate(connectors):
        v = conn.init(jax.random.fold_in(key, k), f, train=False)
        params[f"t{k}"], stats[f"t{k}"] = v["params"], v["batch_stats"]
    return {"params": params, "batch_stats": stats}


def _entropy(w):  # [K,B] -> [B]
    return -jnp.sum(w * jnp.log(jnp.clip(w, 1e-12)), axis=0)


def make_distill_step(method: Method, model: nn.Module, teachers: Sequence[nn.Module], tx: optax.GradientTransformation,
                      mesh, *, eps: float, step_size: float, steps: int, connectors: Sequence[Connector] = (),
                      augment: bool = True, pad: int = 4, flip: bool = True, sync_bn: bool = True):
    """Returns `step(state, batch, key, teacher_vars, feature_weight) -> (state, metrics)`.

    `state.extra` holds the connectors' variables and optimiser state when the method has them.
    `teacher_vars` is a tuple of each teacher's {'params', 'batch_stats'} (replicated, frozen).
    """
    views_t = set(method.teacher_views)
    if method.connectors:
        views_t.add(method.feature_target)

    def teach(teacher_vars, z):
        logits, feats = [], []
        for tm, tv in zip(teachers, teacher_vars):
            lg, ft = tm.apply(jax.lax.stop_gradient(tv), z, train=False)
            logits.append(lg)
            feats.append(ft["final"].astype(jnp.float32))
        return jax.lax.stop_gradient(jnp.stack(logits)), tuple(jax.lax.stop_gradient(f) for f in feats)

    def local(state, teacher_vars, images, labels, aug, noise, feature_weight):
        x = augment_lib.augment(images, aug, pad=pad) if augment else augment_lib.to_float(images)
        y = labels
        frozen = jax.lax.stop_gradient({"params": state.params, "batch_stats": state.batch_stats})
        if method.inner_loss is not None:
            student_logits = lambda z: model.apply(frozen, z, train=False)[0]
            start = {"uniform": x + eps * noise, "normal": x + 0.001 * noise, "none": x}[method.attack_init]
            x_adv = pgd_from(lambda z: method.inner_loss(student_logits(z), y), x, start, eps=eps,
                             step_size=step_size, steps=steps)
        else:
            x_adv = x
        t_nat, f_nat = teach(teacher_vars, x) if "nat" in views_t else (None, None)
        t_adv, f_adv = teach(teacher_vars, x_adv) if "adv" in views_t else (None, None)
        f_teachers = f_nat if method.feature_target == "nat" else f_adv

        def loss_fn(trainable):
            params, conn = trainable
            bs = state.batch_stats
            logits, mapped, conn_bs = {}, {}, conn.get("batch_stats", {})
            for view, z in (("adv", x_adv), ("nat", x)):
                if view not in method.student_views:
                    continue
                (lg, ft), upd = model.apply({"params": params, "batch_stats": bs}, z, train=True,
                                            mutable=["batch_stats"])
                bs, logits[view] = upd["batch_stats"], lg
                if method.connectors:
                    outs = []
                    for k, c in enumerate(connectors):
                        out, u = c.apply({"params": conn["params"][f"t{k}"], "batch_stats": conn_bs[f"t{k}"]},
                                         ft["final"].astype(jnp.float32), train=True, mutable=["batch_stats"])
                        conn_bs = {**conn_bs, f"t{k}": u["batch_stats"]}
                        outs.append(out)
                    mapped[view] = tuple(outs)
            out = Outputs(y=y, s_adv=logits.get("adv"), s_nat=logits.get("nat"), t_adv=t_adv, t_nat=t_nat,
                          f_teachers=f_teachers, mapped_adv=mapped.get("adv"), mapped_nat=mapped.get("nat"),
                          feature_weight=feature_weight)
            loss, terms = method.outer_loss(out)
            return loss, (logits, bs, conn_bs, terms)

        conn_vars = state.extra.get("connectors", {"params": {}, "batch_stats": {}})
        # Gradients w.r.t. device-varying copies of the replicated parameters: this device's own
        # gradient, averaged explicitly below (see train/step.py).
        p_local = jax.lax.pcast(state.params, DATA, to="varying")
        c_local = jax.lax.pcast(conn_vars["params"], DATA, to="varying")
        loss_of = lambda p, cp: loss_fn((p, {"params": cp, "batch_stats": conn_vars["batch_stats"]}))
        (loss, (logits, bs, conn_bs, terms)), (g_params, g_conn) = jax.value_and_grad(
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
        for view, t in (("nat", t_nat), ("adv", t_adv)):
            if t is not None:
                right = jnp.argmax(t, -1) == y                                   # [K,B]
                metrics[f"teacher_correct_{view}"] = psum(jnp.sum(right, axis=1).astype(jnp.float32))
                metrics[f"all_wrong_{view}_sum"] = psum(jnp.sum(~jnp.any(right, axis=0)).astype(jnp.float32))
        if "w_adv" in terms:
            metrics["w_adv_sum"] = psum(jnp.sum(terms["w_adv"], axis=1))         # [K]
            metrics["w_adv_entropy_sum"] = psum(jnp.sum(_entropy(terms["w_adv"])))
        state = state.replace(step=state.step + 1, params=params, batch_stats=bs, opt_state=opt_state, extra=extra)
        return state, metrics

    sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), P(DATA), P(DATA), P(DATA), P(DATA), P()),
                            out_specs=(P(), P()))

    def step(state: TrainState, batch: dict, key: jax.Array, teacher_vars=(), feature_weight=1.0):
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
        return sharded(state, tuple(teacher_vars), batch["image"], batch["label"], aug, noise,
                       jnp.asarray(feature_weight, jnp.float32))

    return step
