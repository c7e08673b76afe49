"""AutoAttack, standard version (Croce & Hein, ICML 2020): APGD-CE → APGD-T → FAB-T → Square.

Bookkeeping (docs/evaluation.md, "AutoAttack"):
  * clean-misclassified points are never attacked (they count as broken from the start);
  * each stage attacks only the points still robust after the previous stages, each starting
    from the clean image; a point broken by a stage keeps that stage's adversarial example;
  * robust accuracy after each stage is cumulative, the final one is the pointwise worst case
    over all stages; points never broken are returned as the clean image.

Shapes. The survivors are gathered on the host and cut into chunks of `batch_size`; the last,
partial chunk is padded (by repeating its own points, whose duplicate results are dropped) up to
the smallest of `n_buckets` sizes ⌈batch_size · k / n_buckets⌉, k = 1..n_buckets, or of the powers
of two below those (`bucket_sizes`). Each attack is compiled once per bucket size it meets, so a
bounded number of times whatever the survivor counts
(the jitted chunk function is cached across calls on (attack, ε, logits_fn's static part): pass
a `jax.tree_util.Partial(f, variables)` and every checkpoint of one architecture shares it). Only survivors and
copies of survivors are ever passed to an attack.

Why evenly spaced buckets: the expensive stages (APGD-T, FAB-T, Square: ~900, ~900 and 5000
model evaluations per point) run on the points that survived APGD-CE, typically a large fraction
of the batch for a robust model. Halving buckets (batch/8, /4, /2, 1) pad e.g. 55% survivors to the
full batch (1.8× the work); evenly spaced ones waste at most batch_size / n_buckets points.
A single call meets at most two sizes per attack (full chunks and the remainder), so
more buckets cost compilations only across calls with many different survivor counts.

Randomness: stage i uses fold_in(key, i), chunk j of it fold_in(that, j): the same key and inputs
give the same result. The composition itself runs on the host (it is not jittable); every attack
it calls is.
"""
from __future__ import annotations

import functools
import math
import time
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sa_mdrad_jax.attacks.fab import fab_t, fab_t_host
from sa_mdrad_jax.attacks.host_loop import as_partial, is_host_driven, resolve_loop
from sa_mdrad_jax.attacks.pgd import project
from sa_mdrad_jax.attacks.square import square

LogitsFn = Callable[[jax.Array], jax.Array]
Attack = Callable[..., jax.Array]  # attack(logits_fn, x, y, key, *, eps) -> x_adv

STANDARD = ("apgd_ce", "apgd_t", "fab_t", "square")
N_BUCKETS = 4


def _apgd(name: str) -> Attack:
    """APGD lives in its own module; import it only when a composition asks for it. A '_host'
    variant (attacks/host_loop.py) is marked host-driven, as the function it calls."""

    def attack(logits_fn, x, y, key, *, eps):
        from sa_mdrad_jax.attacks import apgd

        return getattr(apgd, name)(logits_fn, x, y, key, eps=eps)

    attack.__name__ = name
    attack.host_driven = name.endswith("_host")
    return attack


# module-level: stable identity → jit cache
_apgd_ce, _apgd_t, _apgd_ce_host, _apgd_t_host = map(_apgd, ("apgd_ce", "apgd_t", "apgd_ce_host", "apgd_t_host"))


def default_registry(loop: str | None = None) -> dict[str, Attack]:
    """The standard attacks with AutoAttack's standard hyper-parameters (the functions' defaults).

    loop: 'host' drives APGD, APGD-T and FAB-T from Python one jitted iteration at a time,
    'device' runs each inside one compiled program, 'auto'/None picks by backend
    (attacks/host_loop.py: host on CPU). Square's loop is forward-only and stays on the device.
    """
    if resolve_loop(loop) == "host":
        return {"apgd_ce": _apgd_ce_host, "apgd_t": _apgd_t_host, "fab_t": fab_t_host, "square": square}
    return {"apgd_ce": _apgd_ce, "apgd_t": _apgd_t, "fab_t": fab_t, "square": square}


def bucket_sizes(batch_size: int, n_buckets: int = N_BUCKETS) -> list[int]:
    """Padded chunk sizes, ascending: ⌈batch_size · k / n_buckets⌉ for k = 1..n_buckets, and the
    powers of two below the smallest of those (a handful of survivors, as a natural model leaves
    after APGD-CE, then runs at its own small size rather than padded to batch_size / n_buckets)."""
    if batch_size < 1 or n_buckets < 1:
        raise ValueError(f"batch_size and n_buckets must be >= 1, got {batch_size} and {n_buckets}.")
    even = {max(1, math.ceil(batch_size * k / n_buckets)) for k in range(1, n_buckets + 1)}
    small = {2 ** i for i in range(max(min(even), 1).bit_length()) if 2 ** i < min(even)}
    return sorted(even | small)


def _chunks(idx: np.ndarray, batch_size: int, n_buckets: int = N_BUCKETS) -> list[tuple[np.ndarray, int]]:
    """Cuts indices into (padded indices, number of real ones) with sizes from `bucket_sizes`."""
    sizes = bucket_sizes(batch_size, n_buckets)
    out = []
    for start in range(0, len(idx), batch_size):
        part = idx[start:start + batch_size]
        size = next(s for s in sizes if s >= len(part))
        out.append((np.resize(part, size), len(part)))
    return out


@jax.jit
def _predict(x: jax.Array, logits_fn: jax.tree_util.Partial) -> jax.Array:
    return jnp.argmax(logits_fn(x), axis=-1)


def _finish_chunk(x_adv: jax.Array, x: jax.Array, y: jax.Array, logits_fn: jax.tree_util.Partial, *,
                  eps: float) -> tuple[jax.Array, jax.Array]:
    """(x_adv projected onto the ε-ball ∩ [0,1] — a guard, a no-op if valid — still-correct mask)."""
    x_adv = project(x_adv, x, eps)
    return x_adv, jnp.argmax(logits_fn(x_adv), axis=-1) == y


_finish_chunk_jit = jax.jit(_finish_chunk, static_argnames=("eps",))


@functools.partial(jax.jit, static_argnames=("attack", "eps"))
def _attack_chunk_jit(x: jax.Array, y: jax.Array, key: jax.Array, logits_fn: jax.tree_util.Partial, *,
                      attack: Attack, eps: float) -> tuple[jax.Array, jax.Array]:
    return _finish_chunk(attack(logits_fn, x, y, key, eps=eps), x, y, logits_fn, eps=eps)


def _attack_chunk(x: jax.Array, y: jax.Array, key: jax.Array, logits_fn: jax.tree_util.Partial, *, attack: Attack,
                  eps: float) -> tuple[jax.Array, jax.Array]:
    """Runs one attack on a chunk: (x_adv projected onto the ε-ball ∩ [0,1], still-correct mask).
    A jittable attack runs in one compiled program; a host-driven one jits its own pieces."""
    if is_host_driven(attack):
        return _finish_chunk_jit(attack(logits_fn, x, y, key, eps=eps), x, y, logits_fn, eps=eps)
    return _attack_chunk_jit(x, y, key, logits_fn, attack=attack, eps=eps)


def _predict_all(logits_fn: LogitsFn, x: np.ndarray, batch_size: int, n_buckets: int) -> np.ndarray:
    pred = np.empty(len(x), np.int32)
    for idx, n in _chunks(np.arange(len(x)), batch_size, n_buckets):
        pred[idx[:n]] = np.asarray(_predict(jnp.asarray(x[idx]), logits_fn))[:n]
    return pred


def autoattack(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, key: jax.Array, *, eps: float,
               attacks: Sequence[str] = STANDARD, registry: Mapping[str, Attack] | None = None,
               batch_size: int | None = None, n_buckets: int = N_BUCKETS) -> tuple[jax.Array, dict]:
    """Runs `attacks` in order on the still-robust points; returns (x_adv, report).

    x: float32 [N,H,W,C] in [0,1]; y: int [N]. `registry` maps names to attacks with the shared
    signature attack(logits_fn, x, y, key, *, eps) -> x_adv (default: `default_registry()`).
    `batch_size=None` attacks all points in one chunk; a partial chunk is padded to one of
    `n_buckets` sizes (module docstring). The default registry follows `attacks.host_loop.resolve_loop`
    (host-driven APGD/FAB loops on CPU, $SA_MDRAD_AA_LOOP to override). Compiled attacks are reused across calls when
    `logits_fn` is a stable object or a `jax.tree_util.Partial` of a stable function (`as_partial`).

    report: n_points, eps, attacks, clean_accuracy, robust_accuracy_after {name: cumulative
    robust accuracy after that stage}, n_attacked {name: points the stage attacked}, seconds
    {name: wall time}, robust_accuracy (final, pointwise worst case).
    """
    registry = default_registry() if registry is None else registry
    unknown = [a for a in attacks if a not in registry]
    if unknown:
        raise ValueError(f"Unknown attacks {unknown}. Valid: {', '.join(registry)}.")
    logits_fn = as_partial(logits_fn)
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int32)
    n = len(x)
    batch_size = max(n, 1) if batch_size is None else int(batch_size)
    eps = float(eps)

    robust = _predict_all(logits_fn, x, batch_size, n_buckets) == y
    x_adv = x.copy()
    report = {"n_points": n, "eps": eps, "attacks": list(attacks),
              "clean_accuracy": float(robust.mean()) if n else 0.0,
              "robust_accuracy_after": {}, "n_attacked": {}, "seconds": {}}
    for stage, name in enumerate(attacks):
        start = time.perf_counter()
        live = np.flatnonzero(robust)
        stage_key = jax.random.fold_in(key, stage)
        for j, (idx, n_real) in enumerate(_chunks(live, batch_size, n_buckets)):
            xa, still = _attack_chunk(jnp.asarray(x[idx]), jnp.asarray(y[idx]),
                                      jax.random.fold_in(stage_key, j), logits_fn, attack=registry[name],
                                      eps=eps)
            real, xa, still = idx[:n_real], np.asarray(xa)[:n_real], np.asarray(still)[:n_real]
            broken = real[~still]
            x_adv[broken] = xa[~still]
            robust[broken] = False
        report["n_attacked"][name] = int(len(live))
        report["robust_accuracy_after"][name] = float(robust.mean()) if n else 0.0
        report["seconds"][name] = time.perf_counter() - start
    report["robust_accuracy"] = float(robust.mean()) if n else 0.0
    return jnp.asarray(x_adv), report
