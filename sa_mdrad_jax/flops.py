"""Analytic FLOP counts from a function's jaxpr (convolutions and matrix products).

Counts 2·MACs of every `conv_general_dilated` and `dot_general`, including the positions that
fall on zero padding — the convention of the papers and of performance.md (ResNet-18 on 32×32:
0.555 GMAC). XLA's `cost_analysis` skips padded taps and counts a `fori_loop` body once, so it is
not used for the limit. Element-wise work (BN, ReLU, softmax) is ignored: it is a few percent.
"""
from __future__ import annotations

import math

import jax
from jax.extend import core as jex_core


def _eqn_flops(eqn) -> float:
    name = eqn.primitive.name
    if name == "conv_general_dilated":
        lhs, rhs = (v.aval for v in eqn.invars[:2])
        out = eqn.outvars[0].aval
        dn = eqn.params["dimension_numbers"]
        rhs_spec = dn.rhs_spec  # (out_feature_dim, in_feature_dim, *spatial)
        kernel_spatial = math.prod(rhs.shape[d] for d in rhs_spec[2:])
        in_per_group = rhs.shape[rhs_spec[1]]
        return 2.0 * math.prod(out.shape) * kernel_spatial * in_per_group
    if name == "dot_general":
        (lhs_contract, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval
        contracted = math.prod(lhs.shape[d] for d in lhs_contract)
        return 2.0 * math.prod(eqn.outvars[0].aval.shape) * contracted
    return 0.0


def _jaxpr_flops(jaxpr) -> float:
    total = 0.0
    for eqn in jaxpr.eqns:
        total += _eqn_flops(eqn)
        for param in eqn.params.values():
            for sub in (param if isinstance(param, (list, tuple)) else [param]):
                if isinstance(sub, jex_core.ClosedJaxpr):
                    total += _jaxpr_flops(sub.jaxpr)
                elif isinstance(sub, jex_core.Jaxpr):
                    total += _jaxpr_flops(sub)
    return total


def count_flops(fn, *args) -> float:
    """FLOPs of one call of `fn(*args)` (arguments may be ShapeDtypeStructs)."""
    return _jaxpr_flops(jax.make_jaxpr(fn)(*args).jaxpr)


def forward_flops(model, variables, image_shape) -> float:
    """FLOPs of one eval-mode forward pass of `model` on one image of `image_shape` (H, W, C)."""
    x = jax.ShapeDtypeStruct((1, *image_shape), "float32")
    return count_flops(lambda v, x: model.apply(v, x, train=False)[0], variables, x)


def method_step_flops(method, student: float, teachers=(), steps: int = 10) -> float:
    """Analytic FLOPs per image of one training step of `method` (a `methods.Method`, or None for
    natural training), from the views the step runs (performance.md's accounting):

      attack   K · 2F (forward + input-gradient), + K · 2ΣT when the inner loss calls the teachers
               at x' (AdaAD); + F for a clean student reference ('s_nat', TRADES), + ΣT_nat for the
               teachers' clean logits ('t_nat', RSLAD: reused by the outer loss, counted once)
      outer    3F per student view (forward + backward), + the teachers' forward on each teacher
               view (only the teachers `view_teachers` names for it, e.g. MTARD's)

    `student` is F, `teachers` the forward FLOPs T_k of each teacher, `steps` the PGD steps K.
    E.g. PGD-AT 10·2F + 3F; RSLAD 10·2F + T + 2·3F; SA-MDRAD 10·2F + 2·3F + 2·ΣT_k. Connectors,
    losses and element-wise work are not counted.
    """
    f, teachers = float(student), [float(t) for t in teachers]
    if method is None:
        return 3 * f

    def t_of(view):
        chosen = (method.view_teachers or {}).get(view)
        return sum(teachers) if chosen is None else sum(teachers[i] for i in chosen)

    total = 0.0
    if method.inner_loss is not None:
        total += steps * (2 * f + (2 * sum(teachers) if method.inner_teachers else 0.0))
        total += f if "s_nat" in method.inner_refs else 0.0
        total += t_of("nat") if "t_nat" in method.inner_refs else 0.0
    total += 3 * f * len(method.student_views)
    total += sum(t_of(v) for v in method.teacher_views if not (v == "nat" and "t_nat" in method.inner_refs))
    return total
