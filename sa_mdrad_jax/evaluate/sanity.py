"""Sanity checks S1–S11 against gradient masking (evaluation.md), with the measured values.

A robust-accuracy number is only as good as the attack behind it. Gradient masking (shattered,
saturated, stochastic or deceptive gradients; Athalye, Carlini & Wagner 2018, "Obfuscated
gradients give a false sense of security"; Carlini et al. 2019, "On evaluating adversarial
robustness", §5) makes gradient attacks fail while the model is not robust. Each check below is
a symptom that such an evaluation shows and an honest one does not:

  S1  validity: every x' returned by every attack run here has ‖x'−x‖∞ ≤ ε + 1e-6, x' ∈ [0,1],
      and is finite.
  S2  determinism: bit-identical logits over 5 calls, and the same logits when the batch
      companions of a point are shuffled or replaced by noise images (eval-mode BN, no dropout,
      no test-time randomness). "The same" allows float reassociation only: |Δlogit| ≤
      `s2_rtol` (1e-5) × max|logit|. XLA's CPU convolution blocks the batch dimension, so an image
      in another row can differ in the last bits (measured: 1.9e-6 on logits of size 22 for
      resnet_tiny); batch-statistics BN or dropout change logits by orders of magnitude more.
  S3  outputs are logits, not probabilities (CE on probabilities has vanishing gradients):
      fails when EVERY row is a probability vector (entries in [0,1], sum 1 ± 1e-4).
  S4  no sample has an all-zero input gradient of the CE loss at the random start
      x'_0 = clip(x + U(−ε, ε), 0, 1) (a saturated softmax or a flat/quantised input path).
  S5  accuracy under pgd20-style PGD (20 steps of 2/255, uniform start, one key) is
      non-increasing over ε ∈ {0,1,2,4,8,16,32}/255, and ε = 0 gives the clean accuracy exactly.
      Tolerance: PGD is a local search, so a point broken at ε_k can survive at ε_{k+1} (another
      radius means another uniform start, other projections, another trajectory); the TRUE robust
      accuracy is monotone but its PGD estimate only almost surely so. We allow an increase of at
      most `s5_tolerance_points` test points (default 1) between consecutive radii: with radii
      doubling, the points newly broken at ε_{k+1} far outnumber such losses on an honest model,
      while a masked one gains many points at once (the test model gains tens of points).
  S6  at ε = 64/255 and ε = 1, PGD (20 steps of 2.5ε/20, Madry et al.'s rule) and APGD-CE drive
      accuracy (pointwise worst case of the two) to ≤ `s6_max_accuracy` (1 %): at these radii
      every image can be turned into another class, so only a broken attack leaves points.
  S7  iterative beats one-step: acc(pgd20) ≤ acc(fgsm) + `s7_tolerance` (0).
  S8  convergence: acc(pgd20) − acc(apgd_ce) ≤ `s8_max_gap_pgd_apgd` (2 pp) and
      acc(apgd_ce) − acc(autoattack) ≤ `s8_max_gap_apgd_aa` (2 pp); a stronger optimiser of the same
      loss, or a scale-invariant loss (DLR), gaining much more means the CE gradient misleads.
      acc(apgd_ce) is AutoAttack's first stage (APGD-CE on every clean-correct point, from x).
  S9  white-box beats black-box: acc(square) ≥ best white-box accuracy − `s9_margin` (0.2 pp), the
      white-box accuracies being fgsm, pgd20, apgd_ce and AutoAttack after its white-box stages.
  S10 uniform noise in the ε-ball (one draw, its own key) costs far less than pgd20:
      clean − acc(noise) ≤ `s10_max_fraction` (0.25) × (clean − acc(pgd20)).
  S11 AutoAttack bookkeeping: its final accuracy ≤ clean and ≤ its accuracy after every stage,
      and equals the accuracy recomputed here on the x' it returns (counts, exactly).

Budget. AutoAttack, APGD and Square dominate the cost; `Budget` sets their iterations/queries
("standard" = AutoAttack's standard version; "fast" for CPU runs; "smoke" only checks that
everything runs, it is no evaluation). The budget and the number of
points are part of the returned record and of the Markdown table: with n points, accuracies move
in steps of 1/n, so thresholds below 1/n (S9's 0.2 pp at n < 500) mean "no point".

Attacks get ε as a traced argument, so each compiles once for all radii.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sa_mdrad_jax import attacks, paths
from sa_mdrad_jax.evaluate import batching
from sa_mdrad_jax.losses import cross_entropy

LogitsFn = Callable[[jax.Array], jax.Array]

S5_EPS = tuple(e / 255 for e in (0, 1, 2, 4, 8, 16, 32))
S6_EPS = (64 / 255, 1.0)
N_DETERMINISM_CALLS = 5
PROB_ATOL = 1e-4

DESCRIPTIONS = {
    "S1": "validity: ‖x'−x‖∞ ≤ ε + 1e-6, x' ∈ [0,1], finite (every attack output)",
    "S2": "eval determinism: identical logits over 5 calls and regardless of batch companions",
    "S3": "outputs are logits, not probabilities",
    "S4": "no sample has an all-zero input gradient at the random start",
    "S5": "pgd20 accuracy non-increasing in ε over {0,1,2,4,8,16,32}/255; ε=0 equals clean",
    "S6": "at ε = 64/255 and ε = 1, PGD/APGD drive accuracy to ≤ 1%",
    "S7": "iterative beats one-step: acc(pgd20) ≤ acc(fgsm)",
    "S8": "convergence: pgd20 − apgd_ce and apgd_ce − autoattack are small",
    "S9": "white-box beats black-box: acc(square) ≥ best white-box − 0.2 pp",
    "S10": "uniform noise in the ε-ball costs far less accuracy than pgd20",
    "S11": "AutoAttack accuracy ≤ every per-stage accuracy and equals accuracy recomputed on its x'",
}


@dataclasses.dataclass(frozen=True)
class Budget:
    """Iterations / targets / queries of the costly attacks (AutoAttack's standard by default)."""
    apgd_iter: int = 100
    apgd_t_targets: int = 9
    fab_iter: int = 100
    fab_targets: int = 9
    square_queries: int = 5000


BUDGETS = {"standard": Budget(),
           "fast": Budget(apgd_iter=50, apgd_t_targets=3, fab_iter=30, fab_targets=3, square_queries=1000),
           "smoke": Budget(apgd_iter=10, apgd_t_targets=1, fab_iter=5, fab_targets=1, square_queries=50)}


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One check: `values` are the measurements, `threshold` what they were held against."""
    id: str
    description: str
    passed: bool
    values: dict
    threshold: dict
    summary: str   # the measured values in a line, for the table

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------ small helpers

_batches = batching.batches


def _map_batched(fn, x: np.ndarray, y: np.ndarray, batch_size: int, key: jax.Array) -> np.ndarray:
    """Concatenates fn(xb, yb, key_i) over fixed-size batches (batch i gets fold_in(key, i))."""
    return batching.map_batched(lambda xb, yb, i: fn(xb, yb, jax.random.fold_in(key, i)), x, y, batch_size)


def _pct(a: float) -> str:
    return f"{100 * a:.2f}%"


def _result(cid: str, passed: bool, values: dict, threshold: dict, summary: str) -> CheckResult:
    return CheckResult(cid, DESCRIPTIONS[cid], bool(passed), values, threshold, summary)


class _Runner:
    """Runs attacks on (x, y) in batches, keeps every x' for S1 and every accuracy for the rest."""

    def __init__(self, logits_fn: LogitsFn, x: np.ndarray, y: np.ndarray, batch_size: int):
        self.logits_fn, self.x, self.y, self.batch_size = logits_fn, x, y, batch_size
        self.outputs: list[tuple[str, float, np.ndarray]] = []   # (name, ε, x') for S1
        self._jitted: dict[Any, Callable] = {}

    def correct(self, x_adv: np.ndarray) -> np.ndarray:
        # logits_fn itself (compiled once for the batch shape), argmax on the host: no extra compile.
        logits = _map_batched(lambda xb, yb, _: self.logits_fn(xb), x_adv, self.y, self.batch_size,
                              jax.random.PRNGKey(0))
        return np.argmax(logits, axis=-1) == self.y

    def record(self, name: str, eps: float, x_adv: np.ndarray) -> np.ndarray:
        """Keeps x' for S1; returns the per-point robustness."""
        self.outputs.append((name, float(eps), x_adv))
        return self.correct(x_adv)

    def attack(self, name: str, attack: Callable, eps: float, key: jax.Array) -> np.ndarray:
        """Per-point robustness under `attack` at ε (traced, so one compile for every radius)."""
        if name not in self._jitted:
            self._jitted[name] = jax.jit(lambda xb, yb, k, e: attack(self.logits_fn, xb, yb, k, eps=e))
        fn = self._jitted[name]
        x_adv = _map_batched(lambda xb, yb, k: fn(xb, yb, k, jnp.float32(eps)), self.x, self.y,
                             self.batch_size, key)
        return self.record(name, eps, x_adv)


def _madry_pgd(logits_fn, x, y, key, *, eps):
    """PGD-CE, 20 steps of 2.5ε/20 from a uniform start (Madry et al. 2018's step rule), for S6."""
    return attacks.pgd_attack(logits_fn, x, y, key, eps=eps, step_size=2.5 * eps / 20, steps=20)


def _uniform_noise(x: np.ndarray, key: jax.Array, eps: float) -> np.ndarray:
    """One draw of uniform noise in the ε-ball, clipped to [0, 1] (S10)."""
    return np.clip(x + np.asarray(jax.random.uniform(key, x.shape, jnp.float32, -eps, eps)), 0.0, 1.0)


def resolve_budget(budget: Budget | str) -> tuple[str, Budget]:
    """(name, Budget) of a Budget or of a name in BUDGETS."""
    if isinstance(budget, Budget):
        return next((k for k, v in BUDGETS.items() if v == budget), "custom"), budget
    if budget not in BUDGETS:
        raise ValueError(f"Unknown budget {budget!r}. Valid: {', '.join(BUDGETS)} or a sanity.Budget.")
    return budget, BUDGETS[budget]


def _registry(budget: Budget, n_classes: int) -> dict:
    """AutoAttack's four attacks at `budget` (the default registry for the standard budget)."""
    if budget == Budget():
        return attacks.default_registry()
    targets = lambda k: max(1, min(k, n_classes - 1))
    return {"apgd_ce": functools.partial(attacks.apgd_ce, n_iter=budget.apgd_iter),
            "apgd_t": functools.partial(attacks.apgd_t, n_iter=budget.apgd_iter,
                                        n_target_classes=targets(budget.apgd_t_targets)),
            "fab_t": functools.partial(attacks.fab_t, n_iter=budget.fab_iter,
                                       n_target_classes=targets(budget.fab_targets)),
            "square": functools.partial(attacks.square, n_queries=budget.square_queries)}


def _check_inputs(x, y, eps, batch_size):
    if x.ndim != 4 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"x must be float images [N,H,W,C]; got {x.dtype} {x.shape}.")
    if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must be integer labels [N] with N = {x.shape[0]}; got {y.dtype} {y.shape}.")
    if x.shape[0] < 2:
        raise ValueError(f"Sanity checks need at least 2 points (S2 changes batch companions); "
                         f"got {x.shape[0]}.")
    if x.min() < 0 or x.max() > 1:
        raise ValueError(f"x must lie in [0, 1]; got values in [{x.min()}, {x.max()}].")
    if not 0 < eps <= 1:
        raise ValueError(f"eps must be in (0, 1] (an L∞ radius on [0,1] images); got {eps}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1; got {batch_size}.")


# ------------------------------------------------------------------------------ the checks

def check_validity(outputs: Sequence[tuple[str, float, np.ndarray]], x: np.ndarray,
                   tol: float = 1e-6) -> CheckResult:
    """S1 over every (name, ε, x') produced."""
    per_attack, worst_excess, lo, hi, nonfinite = {}, -np.inf, np.inf, -np.inf, 0
    for name, eps, x_adv in outputs:
        finite = np.isfinite(x_adv)
        nonfinite += int((~finite).sum())
        d = np.where(finite, np.abs(x_adv - x), np.inf).reshape(len(x), -1).max(1)
        excess = float(d.max() - eps)
        key = f"{name}@{eps * 255:.0f}/255"
        per_attack[key] = excess
        worst_excess = max(worst_excess, excess)
        lo, hi = min(lo, float(np.nanmin(x_adv))), max(hi, float(np.nanmax(x_adv)))
    passed = worst_excess <= tol and lo >= 0.0 and hi <= 1.0 and nonfinite == 0
    values = {"max_linf_minus_eps": worst_excess, "min": lo, "max": hi, "n_nonfinite": nonfinite,
              "n_outputs": len(outputs), "linf_minus_eps": per_attack}
    summary = (f"max(‖x'−x‖∞ − ε) = {worst_excess:.2e}, x' ∈ [{lo:.3g}, {hi:.3g}], "
               f"{nonfinite} non-finite ({len(outputs)} attack outputs)")
    return _result("S1", passed, values, {"linf_tol": tol, "box": [0.0, 1.0]}, summary)


def check_determinism(logits_fn: LogitsFn, x: np.ndarray, key: jax.Array, *, batch_size: int,
                      rtol: float = 1e-5) -> CheckResult:
    """S2 on the first batch: 5 calls (bit-identical); rows permuted and the second half replaced
    by noise images (equal up to rtol × max|logit|)."""
    m = min(batch_size, len(x))
    xb = jnp.asarray(x[:m])
    ref = np.asarray(logits_fn(xb))
    repeat = max(float(np.max(np.abs(np.asarray(logits_fn(xb)) - ref))) for _ in range(N_DETERMINISM_CALLS - 1))
    k_perm, k_noise = jax.random.split(key)
    perm = np.asarray(jax.random.permutation(k_perm, m))
    shuffled = np.asarray(logits_fn(xb[perm]))[np.argsort(perm)]
    shuffle_diff = float(np.max(np.abs(shuffled - ref)))
    half = max(1, m // 2)
    noise = jax.random.uniform(k_noise, xb[half:].shape, xb.dtype)
    replaced = np.asarray(logits_fn(jnp.concatenate([xb[:half], noise])))[:half]
    replace_diff = float(np.max(np.abs(replaced - ref[:half])))
    atol = rtol * float(np.max(np.abs(ref)))
    passed = repeat == 0.0 and max(shuffle_diff, replace_diff) <= atol
    values = {"max_abs_diff_repeat": repeat, "max_abs_diff_shuffled": shuffle_diff,
              "max_abs_diff_replaced": replace_diff, "n_points": m, "n_calls": N_DETERMINISM_CALLS}
    summary = (f"max |Δlogit|: {N_DETERMINISM_CALLS} calls {repeat:.2e}, shuffled {shuffle_diff:.2e}, "
               f"companions replaced {replace_diff:.2e} ({m} points)")
    return _result("S2", passed, values, {"repeat_max_abs_diff": 0.0, "companions_max_abs_diff": atol,
                                          "rtol": rtol}, summary)


def check_logits(logits_fn: LogitsFn, x: np.ndarray, *, batch_size: int) -> CheckResult:
    """S3: fails iff every row of the output is a probability vector."""
    z = _map_batched(lambda xb, yb, k: logits_fn(xb), x, np.zeros(len(x), np.int32), batch_size,
                     jax.random.PRNGKey(0))
    is_prob = np.all((z >= 0) & (z <= 1), axis=1) & (np.abs(z.sum(1) - 1) <= PROB_ATOL)
    frac = float(is_prob.mean())
    values = {"fraction_probability_rows": frac, "min_output": float(z.min()), "max_output": float(z.max())}
    summary = f"{_pct(frac)} of rows are probability vectors; outputs in [{z.min():.3g}, {z.max():.3g}]"
    return _result("S3", frac < 1.0, values, {"fraction_probability_rows": "< 100%",
                                              "probability_row": f"entries in [0,1], sum 1 ± {PROB_ATOL}"},
                   summary)


def check_gradients(logits_fn: LogitsFn, x: np.ndarray, y: np.ndarray, key: jax.Array, *, eps: float,
                    batch_size: int) -> CheckResult:
    """S4: per sample, is ∇_x CE(f(x'_0), y) identically zero at x'_0 = clip(x + U(−ε,ε), 0, 1)?"""
    grad = jax.grad(lambda z, yb: jnp.sum(cross_entropy(logits_fn(z), yb)))

    @jax.jit
    def zero_grad(xb, yb, k):
        start = jnp.clip(xb + jax.random.uniform(k, xb.shape, xb.dtype, -eps, eps), 0.0, 1.0)
        g = grad(start, yb)
        return jnp.all(g.reshape(len(xb), -1) == 0, axis=1), jnp.max(jnp.abs(g).reshape(len(xb), -1), axis=1)

    outs = [zero_grad(jnp.asarray(x[idx]), jnp.asarray(y[idx]), jax.random.fold_in(key, i))
            for i, (idx, _) in enumerate(_batches(len(x), batch_size))]
    zero = np.concatenate([np.asarray(o[0])[:t] for o, (_, t) in zip(outs, _batches(len(x), batch_size))])
    gmax = np.concatenate([np.asarray(o[1])[:t] for o, (_, t) in zip(outs, _batches(len(x), batch_size))])
    n_zero = int(zero.sum())
    values = {"n_all_zero": n_zero, "n_points": len(x), "min_max_abs_grad": float(gmax.min())}
    summary = f"{n_zero}/{len(x)} samples with an all-zero gradient; smallest max|∇| {gmax.min():.2e}"
    return _result("S4", n_zero == 0, values, {"n_all_zero": 0}, summary)


def check_monotone(acc_by_eps: dict[float, float], clean: float, n: int,
                   tolerance_points: int = 1) -> CheckResult:
    """S5 on {ε: accuracy under pgd20 at ε}."""
    eps = sorted(acc_by_eps)
    acc = [acc_by_eps[e] for e in eps]
    increases = [b - a for a, b in zip(acc, acc[1:])]
    worst = max(increases) if increases else 0.0
    zero_ok = acc_by_eps.get(0.0, clean) == clean
    # Compare counts of points, not float fractions.
    passed = zero_ok and round(worst * n) <= tolerance_points
    values = {"eps_255": [round(e * 255, 6) for e in eps], "accuracy": acc, "clean": clean,
              "largest_increase": worst, "largest_increase_points": int(round(worst * n)),
              "eps0_equals_clean": zero_ok}
    curve = ", ".join(f"{e * 255:g}: {100 * a:.1f}" for e, a in zip(eps, acc))
    summary = (f"acc (%) by ε·255 = {curve}; largest increase {int(round(worst * n))} pt(s); "
               f"ε=0 {'=' if zero_ok else '≠'} clean {_pct(clean)}")
    return _result("S5", passed, values, {"max_increase_points": tolerance_points, "eps0": "== clean"}, summary)


def check_large_eps(acc: dict[str, dict[str, float]], max_accuracy: float = 0.01) -> CheckResult:
    """S6 on {ε label: {'pgd': acc, 'apgd_ce': acc, 'worst_case': acc}}."""
    passed = all(v["worst_case"] <= max_accuracy for v in acc.values())
    summary = "; ".join(f"ε={k}: pgd {_pct(v['pgd'])}, apgd_ce {_pct(v['apgd_ce'])}, "
                        f"both {_pct(v['worst_case'])}" for k, v in acc.items())
    return _result("S6", passed, {"accuracy": acc}, {"max_accuracy": max_accuracy}, summary)


def check_iterative(acc_pgd20: float, acc_fgsm: float, tolerance: float = 0.0) -> CheckResult:
    """S7."""
    return _result("S7", acc_pgd20 <= acc_fgsm + tolerance, {"pgd20": acc_pgd20, "fgsm": acc_fgsm},
                   {"max_pgd20_minus_fgsm": tolerance},
                   f"pgd20 {_pct(acc_pgd20)} vs fgsm {_pct(acc_fgsm)}")


def check_convergence(acc_pgd20: float, acc_apgd: float, acc_aa: float, max_gap_pgd_apgd: float = 0.02,
                      max_gap_apgd_aa: float = 0.02) -> CheckResult:
    """S8."""
    g1, g2 = acc_pgd20 - acc_apgd, acc_apgd - acc_aa
    passed = g1 <= max_gap_pgd_apgd + 1e-9 and g2 <= max_gap_apgd_aa + 1e-9
    values = {"pgd20": acc_pgd20, "apgd_ce": acc_apgd, "autoattack": acc_aa, "gap_pgd20_apgd_ce": g1,
              "gap_apgd_ce_autoattack": g2}
    summary = (f"pgd20 {_pct(acc_pgd20)}, apgd_ce {_pct(acc_apgd)}, autoattack {_pct(acc_aa)}: "
               f"gaps {100 * g1:+.2f} pp, {100 * g2:+.2f} pp")
    return _result("S8", passed, values, {"max_gap_pgd20_apgd_ce": max_gap_pgd_apgd,
                                          "max_gap_apgd_ce_autoattack": max_gap_apgd_aa}, summary)


def check_black_box(acc_square: float, white_box: dict[str, float], margin: float = 0.002) -> CheckResult:
    """S9."""
    best_name = min(white_box, key=white_box.get)
    best = white_box[best_name]
    values = {"square": acc_square, "white_box": white_box, "best_white_box": best}
    summary = f"square {_pct(acc_square)} vs best white-box {_pct(best)} ({best_name})"
    return _result("S9", acc_square >= best - margin - 1e-9, values, {"margin": margin}, summary)


def check_noise(clean: float, acc_noise: float, acc_pgd20: float, max_fraction: float = 0.25) -> CheckResult:
    """S10."""
    drop_noise, drop_pgd = clean - acc_noise, clean - acc_pgd20
    passed = drop_noise <= max_fraction * max(drop_pgd, 0.0) + 1e-9
    values = {"clean": clean, "noise": acc_noise, "pgd20": acc_pgd20, "drop_noise": drop_noise,
              "drop_pgd20": drop_pgd}
    summary = (f"drop under noise {100 * drop_noise:.2f} pp vs pgd20 {100 * drop_pgd:.2f} pp "
               f"(clean {_pct(clean)})")
    return _result("S10", passed, values, {"max_fraction_of_pgd20_drop": max_fraction}, summary)


def check_autoattack(report: dict, recomputed: float, n: int) -> CheckResult:
    """S11 on the AutoAttack report and the accuracy recomputed on its returned x'."""
    final, after = report["robust_accuracy"], report["robust_accuracy_after"]
    below = final <= report["clean_accuracy"] and all(final <= a for a in after.values())
    equal = round(final * n) == round(recomputed * n)
    values = {"robust_accuracy": final, "recomputed": recomputed, "clean_accuracy": report["clean_accuracy"],
              "robust_accuracy_after": dict(after)}
    stages = ", ".join(f"{k} {_pct(v)}" for k, v in after.items())
    summary = f"final {_pct(final)}, recomputed {_pct(recomputed)}; after stages: {stages}"
    return _result("S11", below and equal, values, {"final": "≤ clean and every stage; == recomputed"},
                   summary)


# ------------------------------------------------------------------------------ all checks

def run_sanity_checks(logits_fn: LogitsFn, x, y, key: jax.Array, *, eps: float = 8 / 255,
                      batch_size: int = 200, budget: Budget | str = "standard",
                      s2_rtol: float = 1e-5, s5_tolerance_points: int = 1, s6_max_accuracy: float = 0.01,
                      s7_tolerance: float = 0.0, s8_max_gap_pgd_apgd: float = 0.02,
                      s8_max_gap_apgd_aa: float = 0.02, s9_margin: float = 0.002,
                      s10_max_fraction: float = 0.25) -> list[CheckResult]:
    """Runs S1..S11 on `logits_fn` (deterministic, eval mode) at (x, y); returns 11 CheckResults.

    x: float [N,H,W,C] in [0,1]; y: int [N]; ε the radius of S1/S4/S7–S11 (S5/S6 use their own).
    `logits_fn` should be a stable, jitted function (AutoAttack caches compiled attacks on it).
    `budget`: a Budget or a name in BUDGETS. Thresholds (defaults in parentheses) are explained
    in the module docstring: s2_rtol (1e-5 of the largest |logit|; repeated calls must be
    bit-identical), s5_tolerance_points (1 point), s6_max_accuracy (1 %), s7_tolerance (0),
    s8_max_gap_pgd_apgd and s8_max_gap_apgd_aa (2 pp each), s9_margin (0.2 pp), s10_max_fraction
    (0.25). Accuracies count clean-misclassified points as not robust.
    """
    _, budget = resolve_budget(budget)
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int32)
    _check_inputs(x, y, eps, batch_size)
    n = len(x)
    batch_size = min(batch_size, n)
    keys = {name: jax.random.fold_in(key, i) for i, name in enumerate(
        ("s2", "s4", "fgsm", "pgd20", "noise", "square", "autoattack", "s5", "s6_pgd", "s6_apgd"))}
    run = _Runner(logits_fn, x, y, batch_size)
    results = {}

    results["S2"] = check_determinism(logits_fn, x, keys["s2"], batch_size=batch_size, rtol=s2_rtol)
    results["S3"] = check_logits(logits_fn, x, batch_size=batch_size)
    results["S4"] = check_gradients(logits_fn, x, y, keys["s4"], eps=eps, batch_size=batch_size)

    clean = float(run.correct(x).mean())
    named = attacks.NAMED   # the attack registry, read now
    apgd_ce = functools.partial(named["apgd_ce"], n_iter=budget.apgd_iter)
    square = functools.partial(named["square"], n_queries=budget.square_queries)
    acc = {"fgsm": float(run.attack("fgsm", named["fgsm"], eps, keys["fgsm"]).mean()),
           "pgd20": float(run.attack("pgd20", named["pgd20"], eps, keys["pgd20"]).mean()),
           "noise": float(run.record("noise", eps, _uniform_noise(x, keys["noise"], eps)).mean()),
           "square": float(run.attack("square", square, eps, keys["square"]).mean())}

    x_aa, report = attacks.autoattack(logits_fn, x, y, keys["autoattack"], eps=eps, batch_size=batch_size,
                                      registry=_registry(budget, jax.eval_shape(logits_fn, x[:1]).shape[-1]))
    acc["autoattack"] = float(report["robust_accuracy"])
    acc["apgd_ce"] = float(report["robust_accuracy_after"]["apgd_ce"])
    recomputed = float(run.record("autoattack", eps, np.asarray(x_aa)).mean())

    # S5: one key for every radius (the uniform start is the same draw scaled by ε).
    curve = {e: float(run.attack("pgd20", named["pgd20"], e, keys["s5"]).mean()) for e in S5_EPS}
    large = {}
    for e in S6_EPS:
        pgd_ok = run.attack("pgd_madry", _madry_pgd, e, keys["s6_pgd"])
        apgd_ok = run.attack("apgd_ce", apgd_ce, e, keys["s6_apgd"])
        label = "1" if e == 1.0 else f"{e * 255:g}/255"
        large[label] = {"pgd": float(pgd_ok.mean()), "apgd_ce": float(apgd_ok.mean()),
                        "worst_case": float((pgd_ok & apgd_ok).mean())}

    after = report["robust_accuracy_after"]
    white_stages = [s for s in report["attacks"] if s != "square"]
    white_box = {k: acc[k] for k in ("fgsm", "pgd20", "apgd_ce")}
    if white_stages:
        white_box[f"autoattack[{'+'.join(white_stages)}]"] = after[white_stages[-1]]

    results["S1"] = check_validity(run.outputs, x)
    results["S5"] = check_monotone(curve, clean, n, s5_tolerance_points)
    results["S6"] = check_large_eps(large, s6_max_accuracy)
    results["S7"] = check_iterative(acc["pgd20"], acc["fgsm"], s7_tolerance)
    results["S8"] = check_convergence(acc["pgd20"], acc["apgd_ce"], acc["autoattack"], s8_max_gap_pgd_apgd,
                                      s8_max_gap_apgd_aa)
    results["S9"] = check_black_box(acc["square"], white_box, s9_margin)
    results["S10"] = check_noise(clean, acc["noise"], acc["pgd20"], s10_max_fraction)
    results["S11"] = check_autoattack(report, recomputed, n)
    return [results[f"S{i}"] for i in range(1, 12)]


def markdown_table(results: Sequence[CheckResult | dict], header: str = "") -> str:
    """| id | check | result | measured | threshold | plus a passed count."""
    rows = [r.to_dict() if isinstance(r, CheckResult) else r for r in results]
    cell = lambda text: str(text).replace("|", "\\|")   # a literal | would split the cell
    lines = [header.rstrip() + "\n"] if header else []
    lines += ["| id | check | result | measured | threshold |", "|---|---|---|---|---|"]
    for r in rows:
        thr = ", ".join(f"{k} {v}" for k, v in r["threshold"].items())
        lines.append(f"| {r['id']} | {cell(r['description'])} | {'PASS' if r['passed'] else '**FAIL**'} | "
                     f"{cell(r['summary'])} | {cell(thr)} |")
    n_pass = sum(r["passed"] for r in rows)
    lines.append(f"\n{n_pass}/{len(rows)} checks passed.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ a checkpoint

def sanity_check_checkpoint(workdir: str, *, n_points: int = 1000, eps: float = 8 / 255, batch_size: int = 200,
                            seed: int = 0, budget: Budget | str = "standard", best: bool = False,
                            data_dir: str | None = None, out_dir: str | None = None, **thresholds) -> dict:
    """Runs S1–S11 on the latest (or `best`) checkpoint in `workdir` at its first `n_points` test
    points, float32 with the highest matmul precision, eval mode. Writes sanity.json and sanity.md
    to `out_dir` when given. Returns the record: checks, passed, n_points, eps, budget, seed, ...
    """
    from sa_mdrad_jax import checkpoints, data, models

    t0 = time.perf_counter()
    budget_name, budget = resolve_budget(budget)
    model_cfg, variables, meta = checkpoints.load_variables(workdir, best=best)
    model = models.get_model(**{**model_cfg, "dtype": "float32"})
    image_size = meta["image_shape"][0]
    x, y = data.load_split(meta["dataset"], "test", data_dir=data_dir,
                           image_size=image_size if meta["dataset"] == "digits" else None)
    x, y = x[:n_points].astype(np.float32) / 255.0, y[:n_points].astype(np.int32)
    variables = jax.device_get(variables)
    logits_fn = jax.jit(lambda z: model.apply(variables, z, train=False)[0])
    with jax.default_matmul_precision("highest"):
        results = run_sanity_checks(logits_fn, x, y, jax.random.PRNGKey(seed), eps=eps, batch_size=batch_size,
                                    budget=budget, **thresholds)
    record = {"checkpoint": paths.absolute(workdir), "step": meta.get("step"), "best": best,
              "model": model_cfg, "dataset": meta["dataset"], "n_points": int(len(x)), "eps": eps,
              "seed": seed, "batch_size": batch_size,
              "budget": {"name": budget_name, **dataclasses.asdict(budget)},
              "passed": all(r.passed for r in results), "checks": [r.to_dict() for r in results],
              "wall_seconds": time.perf_counter() - t0, "device": jax.devices()[0].device_kind}
    if out_dir:
        write_reports(record, out_dir)
    return record


def record_header(record: dict) -> str:
    b = record["budget"]
    return (f"Sanity checks S1–S11 (evaluation.md) for {record['model']['name']} (step {record['step']}"
            f"{', best' if record.get('best') else ''}) on {record['n_points']} {record['dataset']} test "
            f"points, ε = {record['eps'] * 255:g}/255, seed {record['seed']}; budget {b['name']}: APGD "
            f"{b['apgd_iter']} it, APGD-T {b['apgd_t_targets']} targets, FAB-T {b['fab_iter']} it × "
            f"{b['fab_targets']} targets, Square {b['square_queries']} queries.")


def write_reports(record: dict, out_dir: str) -> None:
    paths.write_text(paths.join(out_dir, "sanity.json"), json.dumps(record, indent=2, default=float))
    paths.write_text(paths.join(out_dir, "sanity.md"), markdown_table(record["checks"], record_header(record)) + "\n")
