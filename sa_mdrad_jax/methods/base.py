"""What a training method is: a few pure functions the generic step calls (methods.md §1, §3).

A method says how its attack builds x' (inner loss, start, BN mode), which teacher and student
outputs its losses need on which inputs, its outer loss, and any state it carries between steps.
The step (`sa_mdrad_jax/train/distill_step.py`) does the rest — PGD, teacher calls, student
forwards, gradients, the update — so adding a method is one new file that registers a `Method`,
and the step does not change.

The step talks to a method through three small records:

* `StepContext` — per-epoch scalars (a pytree: changing them never retraces the step):
  `epoch` (0-based), `feature_weight` (0 during a feature warm-up), `lr_decays` (how many LR
  decays of the schedule have happened by this epoch).
* `AttackContext` — what the PGD inner loss sees at the current iterate z = x'_t: the student's
  logits at z (in the method's attack BN mode), the clean batch, labels, no-gradient clean
  references computed once per step (`s_nat`, `t_nat`, only if the method asks for them), and
  `teachers(z)`, the frozen teachers at z *with* gradient w.r.t. z (traced only by methods that
  call it, e.g. AdaAD).
* `Outputs` — what the outer loss sees: student logits per input ("view") in train mode, teacher
  logits per view (no gradient), features through the connectors, the step context and the
  method state.

Views are named inputs: 'nat' = x, 'adv' = x', plus any a method defines from (x, x') through
`Method.inputs` (IGDM's x ± δ).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp

ATTACK_BN = ("eval", "train", "batch_stats_no_update")
ATTACK_INITS = ("uniform", "normal", "none")
INNER_REFERENCES = ("s_nat", "t_nat")


class StepContext(NamedTuple):
    """Per-epoch scalars passed to every step (arrays, so a new epoch does not recompile)."""
    epoch: Any = 0             # 0-based epoch of this step
    feature_weight: Any = 1.0  # multiplies feature terms (0 during the warm-up epochs)
    lr_decays: Any = 0         # LR decays of the schedule so far (MTARD's η follows them)

    @classmethod
    def make(cls, epoch=0, feature_weight=1.0, lr_decays=0) -> "StepContext":
        return cls(jnp.asarray(epoch, jnp.int32), jnp.asarray(feature_weight, jnp.float32),
                   jnp.asarray(lr_decays, jnp.int32))


class AttackContext(NamedTuple):
    """What `Method.inner_loss(ctx) -> per-example losses [B]` sees at the PGD iterate `z`."""
    z: jax.Array                       # current x' (the variable PGD differentiates w.r.t.)
    s: jax.Array                       # student logits at z, attack BN mode, parameters frozen
    x: jax.Array                       # clean batch
    y: jax.Array                       # labels
    teachers: Callable[[jax.Array], jax.Array]  # z -> [K,B,C] teacher logits, gradient w.r.t. z
    s_nat: jax.Array | None = None     # student clean logits (attack BN mode), no gradient
    t_nat: jax.Array | None = None     # [K,B,C] teacher clean logits, no gradient
    step: StepContext = StepContext()


class Outputs(NamedTuple):
    """What the outer loss sees. `s`/`t` map view names to student logits [B,C] (train mode, with
    gradient) and teacher logits [K_view,B,C] (eval mode, no gradient); `s_adv` etc. are the
    'adv'/'nat' entries (None if unused)."""
    y: jax.Array
    s_adv: jax.Array | None = None
    s_nat: jax.Array | None = None
    t_adv: jax.Array | None = None          # [K,B,C]
    t_nat: jax.Array | None = None          # [K,B,C]
    f_teachers: tuple | None = None        # per stage, per teacher: F_k from the feature-target input
    mapped_adv: tuple | None = None         # per stage, per teacher: r_k(F_S(x'))
    mapped_nat: tuple | None = None         # per stage, per teacher: r_k(F_S(x))
    feature_weight: Any = 1.0               # 0 during the feature warm-up
    s: Mapping[str, jax.Array] | None = None
    t: Mapping[str, jax.Array] | None = None
    step: StepContext = StepContext()
    state: Any = None                       # the method state (after this step's update)


def _no_state():
    return None


@dataclasses.dataclass(frozen=True)
class Method:
    """A training method.

    outer_loss(out: Outputs) -> (loss, terms): `terms` are scalars logged per step (a key starting
        with 'w_' holds [K,B] teacher weights, used for diagnostics only).
    inner_loss(ctx: AttackContext) -> per-example losses [B] that PGD maximises (None: no attack).
    inner_refs: which no-gradient clean references the inner loss reads ('s_nat', 't_nat').
    inner_teachers: the inner loss calls `ctx.teachers(z)` (teacher forward + input-gradient in
        every attack step: AdaAD, SA-MDRAD 'kl_fused_adv').
    teacher_views / student_views: the views each network is run on outside the attack
        (student forwards in this order: it is the order of the BN running-statistics updates).
    view_teachers: optional {view: teacher indices} when a view needs only some teachers
        (MTARD: the robust teacher on x', the natural one on x).
    inputs(x, x_adv) -> {view: array}: extra views (IGDM's x ± δ).
    init_state() -> pytree; state_inputs(out) -> {name: scalar} (averaged over the global batch,
        no gradient); update_state(state, inputs, step_ctx) -> state. The step applies the update
        before the outer loss, so `out.state` is this step's state (MTARD's order).
    """
    name: str
    outer_loss: Callable[[Outputs], tuple[jax.Array, dict]]
    inner_loss: Callable[[AttackContext], jax.Array] | None = None
    inner_refs: tuple[str, ...] = ()
    inner_teachers: bool = False
    attack_init: str = "uniform"
    attack_bn: str = "eval"
    teacher_views: tuple[str, ...] = ()
    student_views: tuple[str, ...] = ("adv",)
    view_teachers: Mapping[str, tuple[int, ...]] | None = None
    inputs: Callable[[jax.Array, jax.Array], dict] | None = None
    connectors: bool = False                # trainable r_k, one per teacher and stage, saved with the student
    feature_target: str = "nat"             # teacher features from x ('nat') or x' ('adv')
    feature_stages: tuple[str, ...] = ("final",)
    init_state: Callable[[], Any] | None = None
    state_inputs: Callable[[Outputs], dict] | None = None
    update_state: Callable[[Any, dict, StepContext], Any] | None = None

    def __post_init__(self):
        if self.attack_bn not in ATTACK_BN:
            raise ValueError(f"Unknown attack BN mode {self.attack_bn!r}. Valid: {', '.join(ATTACK_BN)}.")
        if self.attack_init not in ATTACK_INITS:
            raise ValueError(f"Unknown attack init {self.attack_init!r}. Valid: {', '.join(ATTACK_INITS)}.")
        bad = set(self.inner_refs) - set(INNER_REFERENCES)
        if bad:
            raise ValueError(f"Unknown inner-loss references {sorted(bad)}. Valid: {', '.join(INNER_REFERENCES)}.")
        if (self.update_state is None) != (self.init_state is None):
            raise ValueError("A stateful method needs both init_state and update_state.")

    @property
    def uses_teachers(self) -> bool:
        """Whether any loss reads a teacher (PGD-AT and TRADES do not: they need no teachers block)."""
        return bool(self.teacher_views) or "t_nat" in self.inner_refs or self.inner_teachers


@dataclasses.dataclass(frozen=True)
class Term:
    """An outer-loss term that composes with any method (IGDM, the TRADES KL): `loss(out) ->
    (value, terms)` added to the method's loss, with the views it needs."""
    name: str
    loss: Callable[[Outputs], tuple[jax.Array, dict]]
    student_views: tuple[str, ...] = ()
    teacher_views: tuple[str, ...] = ()
    inputs: Callable[[jax.Array, jax.Array], dict] | None = None


def _union(a: tuple, b: tuple) -> tuple:
    return tuple(a) + tuple(v for v in b if v not in a)


def with_term(method: Method, term: Term) -> Method:
    """`method` with `term` added to its outer loss (views and extra inputs merged)."""
    def outer(out: Outputs):
        loss, terms = method.outer_loss(out)
        value, extra = term.loss(out)
        return loss + value, {**terms, **extra}

    def inputs(x, x_adv):
        views = dict(method.inputs(x, x_adv)) if method.inputs else {}
        views.update(term.inputs(x, x_adv) if term.inputs else {})
        return views

    has_inputs = method.inputs is not None or term.inputs is not None
    return dataclasses.replace(
        method, name=f"{method.name}+{term.name}", outer_loss=outer,
        student_views=_union(method.student_views, term.student_views),
        teacher_views=_union(method.teacher_views, term.teacher_views),
        inputs=inputs if has_inputs else None)


METHODS: dict[str, Callable[..., Method]] = {}
TERMS: dict[str, Callable[..., Term]] = {}


def register(name: str):
    """Registers a factory `make(method_config, teacher_names=None) -> Method` under `name`."""
    def deco(factory):
        if name in METHODS:
            raise ValueError(f"Method {name!r} is already registered.")
        METHODS[name] = factory
        return factory
    return deco


def register_term(name: str):
    """Registers a composable term `make(term_config) -> Term`; a method config adds it with a
    `<name>` sub-block whose `enabled` is True."""
    def deco(factory):
        if name in TERMS:
            raise ValueError(f"Term {name!r} is already registered.")
        TERMS[name] = factory
        return factory
    return deco


def make_method(config, teacher_names: tuple[str, ...] | None = None) -> Method:
    """The Method for `config.name` plus every enabled composable term of `config`.

    `teacher_names` (the config's `teachers` block keys, in their order = teacher index) lets a
    method name teachers (MTARD's robust/natural teacher); without it teacher 0, 1, ... are used.
    """
    if config.name not in METHODS:
        raise ValueError(f"Unknown method {config.name!r}. Valid: {', '.join(sorted(METHODS))}.")
    method = METHODS[config.name](config, teacher_names)
    for name in sorted(TERMS):
        block = config.get(name) if hasattr(config, "get") else None
        if block is not None and block.get("enabled", False):
            method = with_term(method, TERMS[name](block))
    return method


def teacher_index(name_or_index, teacher_names, what: str) -> int:
    """Resolves a teacher named in a method config to its index in the `teachers` block."""
    if isinstance(name_or_index, int):
        return name_or_index
    if teacher_names is None:
        raise ValueError(f"{what}={name_or_index!r} names a teacher, but no teacher names were given "
                         "(pass teacher_names=tuple(config.teachers.keys()) to make_method).")
    if name_or_index not in teacher_names:
        raise ValueError(f"{what}={name_or_index!r} is not a teacher of this config. "
                         f"Valid: {', '.join(teacher_names)}.")
    return list(teacher_names).index(name_or_index)


def check_choice(value, choices, what: str) -> None:
    if value not in choices:
        raise ValueError(f"Unknown {what} {value!r}. Valid: {', '.join(choices)}.")
