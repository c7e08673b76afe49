"""What a training method is: a few pure functions the generic step calls (methods.md §1, §3).

A method says which attack builds x' (inner loss, start, BN mode), which teacher outputs it needs
on which inputs, and its outer loss. The step (`sa_mdrad_jax/train/distill_step.py`) does the
rest — PGD, teacher calls, student forwards, gradients, the update — so adding a method is one
new file that registers a `Method`, and the step does not change.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax

ATTACK_BN = ("eval", "train", "batch_stats_no_update")


class Outputs(NamedTuple):
    """What the outer loss sees: logits [B,C] / [K,B,C] and 'final' feature maps; None if unused."""
    y: jax.Array
    s_adv: jax.Array | None = None
    s_nat: jax.Array | None = None
    t_adv: jax.Array | None = None          # [K,B,C]
    t_nat: jax.Array | None = None          # [K,B,C]
    f_teachers: tuple | None = None        # per teacher: F_k from the feature-target input
    mapped_adv: tuple | None = None         # per teacher: r_k(F_S(x'))
    mapped_nat: tuple | None = None         # per teacher: r_k(F_S(x))
    feature_weight: Any = 1.0               # 0 during the feature warm-up


@dataclasses.dataclass(frozen=True)
class Method:
    """A training method. `outer_loss(out: Outputs) -> (loss, terms)`; `inner_loss(s_adv_logits, y,
    t_nat) -> per-example losses` (None: no attack, natural training)."""
    name: str
    outer_loss: Callable[[Outputs], tuple[jax.Array, dict]]
    inner_loss: Callable[..., jax.Array] | None = None
    attack_init: str = "uniform"
    attack_bn: str = "eval"
    teacher_views: tuple[str, ...] = ()     # subset of ('nat', 'adv')
    student_views: tuple[str, ...] = ("adv",)
    connectors: bool = False                # trainable r_k, one per teacher, saved with the student
    feature_target: str = "nat"             # teacher features from x ('nat') or x' ('adv')

    def __post_init__(self):
        if self.attack_bn not in ATTACK_BN:
            raise ValueError(f"Unknown attack BN mode {self.attack_bn!r}. Valid: {', '.join(ATTACK_BN)}.")


METHODS: dict[str, Callable[..., Method]] = {}


def register(name: str):
    """Registers a factory `make(method_config) -> Method` under `name`."""
    def deco(factory):
        if name in METHODS:
            raise ValueError(f"Method {name!r} is already registered.")
        METHODS[name] = factory
        return factory
    return deco


def make_method(config) -> Method:
    """The Method for `config.name`; unknown names list the valid ones."""
    if config.name not in METHODS:
        raise ValueError(f"Unknown method {config.name!r}. Valid: {', '.join(sorted(METHODS))}.")
    return METHODS[config.name](config)
