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
    diagnostics(terms) -> {name: array}: method-specific per-step metrics from the outer loss's
        terms, each a sum over this device's batch (the step sums them over devices; the loop
        divides names ending in '_sum' by the example count). SA-MDRAD: its teacher weights.
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
    diagnostics: Callable[[dict], dict] | None = None   # terms -> {metric: this device's batch sum}

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


TEACHER_KINDS = ("none", "robust", "natural", "robust+natural")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A method's paper training setting (methods/recipes.py builds `configs/<method>.py` from it).

    schedule: (epochs, LR-decay boundaries in 0-based epochs, weight decay) of the paper (lr 0.1,
        SGD momentum 0.9, batch 128), also what the digits grids scale to their epoch count.
    robust_teachers(dataset) -> {teacher key: model kwargs}: the robust teacher(s) the paper
        distils from on a CIFAR dataset (empty: none).
    cifar(config, dataset): the paper's edits of a CIFAR config beyond the schedule (its attack,
        kl_scale, BN order ...).
    scale_epochs(config, epochs): epoch-indexed options scaled from the paper's epoch count to a
        run of `epochs` (IAD's introspection gate); the digits recipe and grids call it.
    at_eps(config, eps): the paper's attack and BN setting at another ε (TRADES: step 0.007/0.031·ε
        and its three BN forwards); the grids that train "in the paper's setting" call it.
    terms: {term name: edit(config, dataset) or None}: composable terms the paper pairs with this
        method (`paper_config('<term>', '<dataset>,<student>,<method>')`), with the term paper's
        own edits of the base recipe.
    """
    schedule: tuple
    robust_teachers: Callable[[str], dict] | None = None
    cifar: Callable[[Any, str], None] | None = None
    scale_epochs: Callable[[Any, int], None] | None = None
    at_eps: Callable[[Any, float], None] | None = None
    terms: Mapping[str, Callable[[Any, str], None] | None] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """Everything the library knows about a registered method (see `register`)."""
    name: str
    factory: Callable[..., Method]
    defaults: Mapping[str, Any] | None = None
    teachers: str = "robust"
    recipe: Recipe | None = None
    schedule_of: str | None = None
    grid_terms: tuple[str, ...] = ()
    paper_grid: bool = True
    quickstart: bool = False
    benchmark: bool = True
    fashion_grid: bool = False


METHODS: dict[str, Callable[..., Method]] = {}
SPECS: dict[str, MethodSpec] = {}
TERMS: dict[str, Callable[..., Term]] = {}
TERM_DEFAULTS: dict[str, dict] = {}
COMMON_OPTIONS = ("name", "eps", "step_size", "steps")   # every method block: its name and its PGD attack


def register(name: str, *, defaults: Mapping[str, Any] | None = None, teachers: str = "robust",
             recipe: Recipe | None = None, schedule_of: str | None = None, grid_terms: tuple[str, ...] = (),
             paper_grid: bool = True, quickstart: bool = False, benchmark: bool = True, fashion_grid: bool = False,
             replace: bool = False):
    """Registers a factory `make(method_config, teacher_names=None) -> Method` under `name`.

    defaults: the method's options (its config block without `name`, the attack's eps / step_size /
        steps and the composable terms, which every block has); `config.method_config(name)` is
        this block, and a block with an option not listed here is a config error.
    teachers: what a grid gives the method — 'none' (PGD-AT, TRADES: no teacher is read),
        'robust' (one robust teacher), 'natural' (the natural teacher set, SA-MDRAD) or
        'robust+natural' (MTARD: its block's `robust_teacher` / `natural_teacher` name them).
    recipe: its paper's setting (`Recipe`; None: no `configs/<name>.py` paper recipe).
    schedule_of: the registered method whose paper schedule it trains with when it has no recipe.
    grid_terms: composable terms the paper grids also run on this method ('adaad+igdm').
    paper_grid / quickstart / benchmark / fashion_grid: whether the paper grids, the quickstart's
        default students, the benchmark suite's default set and the CPU-sized Fashion-MNIST grid
        (experiments/grids/fashion_mnist.py) include it.
    replace: allow re-registering `name` (tests, notebooks).
    """
    if teachers not in TEACHER_KINDS:
        raise ValueError(f"Unknown teacher kind {teachers!r} for method {name!r}. Valid: {', '.join(TEACHER_KINDS)}.")

    def deco(factory):
        if name in METHODS and not replace:
            raise ValueError(f"Method {name!r} is already registered.")
        METHODS[name] = factory
        SPECS[name] = MethodSpec(name, factory, None if defaults is None else dict(defaults), teachers, recipe,
                                 schedule_of, tuple(grid_terms), paper_grid, quickstart, benchmark, fashion_grid)
        return factory
    return deco


def unregister(name: str) -> None:
    """Removes a registered method (tests that register one of their own)."""
    METHODS.pop(name, None)
    SPECS.pop(name, None)


def method_spec(name: str) -> MethodSpec:
    """The registration of `name`; an unknown name is a config error listing the registered ones."""
    from sa_mdrad_jax.config import ConfigError
    if name not in SPECS:
        raise ConfigError(f"Unknown method {name!r}. Valid: {', '.join(SPECS)}.")
    return SPECS[name]


def method_names(**flags) -> tuple[str, ...]:
    """Registered method names in registration order, filtered by MethodSpec fields
    (`method_names(paper_grid=True)`, `method_names(quickstart=True)`)."""
    return tuple(n for n, s in SPECS.items() if all(getattr(s, k) == v for k, v in flags.items()))


def schedule_recipe(name: str) -> str:
    """The registered method whose paper schedule `name` trains with (itself if it has a recipe)."""
    spec = method_spec(name)
    return name if spec.recipe is not None else (spec.schedule_of or name)


@dataclasses.dataclass(frozen=True)
class TermRecipe:
    """A composable term's paper setting on top of a base method's `Recipe`: `default_base` when
    the config argument names none; `cifar(config, dataset)` / `digits(config)` switch the term on
    with the paper's edits (the base's `Recipe.terms[<term>]` adds its own after `cifar`)."""
    default_base: str
    cifar: Callable[[Any, str], None]
    digits: Callable[[Any], None]


TERM_RECIPES: dict[str, TermRecipe] = {}


def register_term(name: str, *, defaults: Mapping[str, Any] | None = None, recipe: TermRecipe | None = None,
                  replace: bool = False):
    """Registers a composable term `make(term_config) -> Term`; a method config adds it with a
    `<name>` sub-block whose `enabled` is True. `defaults` is that sub-block (with `enabled=False`),
    which every method block carries; `recipe` its paper setting (`paper_config('<name>', ...)`)."""
    def deco(factory):
        if name in TERMS and not replace:
            raise ValueError(f"Term {name!r} is already registered.")
        TERMS[name] = factory
        TERM_DEFAULTS[name] = dict(enabled=False, **(defaults or {}))
        if recipe is not None:
            TERM_RECIPES[name] = recipe
        return factory
    return deco


class _Options:
    """A method block as its factory sees it: reading an option the block lacks is a config error
    naming the block's keys (instead of ml_collections' bare AttributeError)."""

    def __init__(self, block, method: str):
        object.__setattr__(self, "_block", block)
        object.__setattr__(self, "_method", method)

    def __getattr__(self, key):
        block = object.__getattribute__(self, "_block")
        if key.startswith("__") or key in ("get", "keys", "items", "values", "to_dict"):
            return getattr(block, key)
        if key not in block:
            from sa_mdrad_jax.config import ConfigError
            spec = SPECS.get(self._method)
            keys = sorted(set(COMMON_OPTIONS) | set(spec.defaults)) if spec and spec.defaults else sorted(block.keys())
            raise ConfigError(f"Method {self._method!r} needs option {key!r}, which its config block lacks "
                              f"(`config.method_config({self._method!r})` has every option). "
                              f"Valid keys: {', '.join(keys)}.")
        return block[key]

    def __getitem__(self, key):
        return self.__getattr__(key)

    def __contains__(self, key):
        return key in self._block


def check_options(config) -> None:
    """Raises ConfigError if the method block `config` has an option its method did not register."""
    spec = method_spec(config.name)
    if spec.defaults is None or not hasattr(config, "keys"):
        return
    valid = set(COMMON_OPTIONS) | set(spec.defaults) | set(TERMS)
    unknown = sorted(set(config.keys()) - valid)
    if unknown:
        from sa_mdrad_jax.config import ConfigError
        raise ConfigError(f"Method {config.name!r} has no option(s) {', '.join(map(repr, unknown))}. "
                          f"Valid keys: {', '.join(sorted(valid))}.")


def make_method(config, teacher_names: tuple[str, ...] | None = None) -> Method:
    """The Method for `config.name` plus every enabled composable term of `config`.

    `teacher_names` (the config's `teachers` block keys, in their order = teacher index) lets a
    method name teachers (MTARD's robust/natural teacher); without it teacher 0, 1, ... are used.
    """
    method_spec(config.name)
    check_options(config)
    method = METHODS[config.name](_Options(config, config.name), teacher_names)
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
