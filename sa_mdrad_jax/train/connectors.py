"""Connectors and feature plumbing of the distillation step (methods.md §2).

A connector r_{k,s} maps the student's feature map at stage s to teacher k's map shape at that stage;
connectors are trainable, saved with the student (`state.extra['connectors']`), and exist only for
methods with `Method.connectors` (SA-MDRAD's feature term). This module builds them from the
networks' feature shapes, initialises them, and applies them to a student forward's features.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from sa_mdrad_jax.train.input import DATA_AXIS as DATA


class Connector(nn.Module):
    """r_k: student map -> teacher map shape. Resize (average pooling when shrinking, bilinear
    when enlarging), then 1×1 conv C_S→C_k, BatchNorm, ReLU (methods.md §2)."""
    out_channels: int
    out_size: tuple[int, int]
    axis_name: str | None = None  # sync BN statistics over this mesh axis (like the student)

    @nn.compact
    def __call__(self, f: jax.Array, train: bool) -> jax.Array:
        h, w = f.shape[1:3]
        th, tw = self.out_size
        if (h, w) != (th, tw):
            if h % th == 0 and w % tw == 0 and h >= th and w >= tw:
                f = nn.avg_pool(f, (h // th, w // tw), strides=(h // th, w // tw))
            elif h >= th and w >= tw:  # shrinking by a non-integer factor: area-style resize
                f = jax.image.resize(f, (f.shape[0], th, tw, f.shape[3]), "linear", antialias=True)
            else:
                f = jax.image.resize(f, (f.shape[0], th, tw, f.shape[3]), "bilinear", antialias=False)
        f = nn.Conv(self.out_channels, (1, 1), use_bias=False, name="conv")(f)
        f = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, axis_name=self.axis_name,
                         name="bn")(f)
        return nn.relu(f)


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


def apply_connectors(connectors: Sequence[ConnectorSpec], params: dict, batch_stats: dict, features: dict,
                     stages: Sequence[str]) -> tuple[tuple, dict]:
    """r_{k,s}(F_S^s) in train mode for every stage (in `stages` order) and teacher: returns
    (per stage, per teacher mapped maps; the connectors' updated batch statistics)."""
    per_stage = []
    for s in stages:
        outs = []
        for c in connectors:
            if c.stage != s:
                continue
            out, u = c.module.apply({"params": params[c.key], "batch_stats": batch_stats[c.key]},
                                    features[s].astype(jnp.float32), train=True, mutable=["batch_stats"])
            batch_stats = {**batch_stats, c.key: u["batch_stats"]}
            outs.append(out)
        per_stage.append(tuple(outs))
    return tuple(per_stage), batch_stats
