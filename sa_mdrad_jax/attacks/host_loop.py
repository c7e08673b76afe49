"""Host-driven iteration for AutoAttack's long attack loops (APGD, APGD-T, FAB-T) on CPU.

XLA:CPU runs a network *gradient* inside a while loop (`lax.fori_loop`) 1.4–3.6× slower than the
same computation outside one (BENCHMARKS.md, "The PGD loop on CPU"); unrolling a 100-iteration
APGD run removes that but takes minutes to compile. So on CPU the AutoAttack driver runs these
attacks as a Python loop over ONE jitted iteration: the iteration compiles once (seconds), each
call runs at the unrolled speed, and a run can stop as soon as every point of the chunk is broken.
The iteration, start and finish functions are the very ones the in-graph (`lax.fori_loop`)
versions use, so both compute the same operations in the same order (bit-identical with XLA's
optimisations off: tests/test_host_loop.py; at full optimisation XLA may fuse them differently,
a float-rounding-level difference).

`resolve_loop`: 'device' keeps every loop inside one compiled program (the right choice on
GPU/TPU, where the per-call dispatch would cost more than it saves), 'host' drives them from
Python; 'auto' (default) is 'host' on CPU and 'device' elsewhere. The environment variable
SA_MDRAD_AA_LOOP overrides 'auto'.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Callable

import jax
import numpy as np

LOOPS = ("auto", "host", "device")
ENV = "SA_MDRAD_AA_LOOP"


def resolve_loop(loop: str | None = None) -> str:
    """'host' or 'device' for `loop` in LOOPS (None reads $SA_MDRAD_AA_LOOP, default 'auto')."""
    loop = os.environ.get(ENV, "auto") if loop is None else loop
    if loop not in LOOPS:
        raise ValueError(f"Unknown attack loop {loop!r} (argument or ${ENV}). Valid: {', '.join(LOOPS)}.")
    if loop == "auto":
        return "host" if jax.default_backend() == "cpu" else "device"
    return loop


def as_partial(fn: Callable) -> jax.tree_util.Partial:
    """`fn` as a pytree a jitted function takes as an ordinary argument.

    A `jax.tree_util.Partial(f, variables)` keeps `f` static and the variables as traced leaves, so
    every model of one architecture (same `f`, same variable shapes) shares one compiled attack;
    any other callable is wrapped with no leaves and is static by identity.
    """
    return fn if isinstance(fn, jax.tree_util.Partial) else jax.tree_util.Partial(fn)


def host_fori_loop(lower: int, upper: int, body: Callable[[Any, Any], Any], state: Any, *,
                   stop: Callable[[Any], Any] | None = None) -> Any:
    """`lax.fori_loop(lower, upper, body, state)` driven from Python, `body` called with an int32
    counter; returns early once `stop(state)` is true (checked before each iteration)."""
    for k in range(lower, upper):
        if stop is not None and bool(stop(state)):
            break
        state = body(np.int32(k), state)
    return state


def host_driven(fn: Callable) -> Callable:
    """Marks an attack that jits its own pieces and must be called outside `jax.jit`."""
    fn.host_driven = True
    return fn


def is_host_driven(attack: Callable) -> bool:
    """True for a `host_driven` attack, also behind `functools.partial`."""
    while isinstance(attack, functools.partial):
        attack = attack.func
    return bool(getattr(attack, "host_driven", False))
